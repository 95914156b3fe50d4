"""Generation step 3, index: the suffix-array index (infini-gram) of the training documents' token
ids, in ``index/``; index document ``i`` is accepted document ``i`` (submission order)."""

from __future__ import annotations

from attribution.spans import SpanIndex, build_span_index
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.generation.train_step import train_generation
from datanet_lab.pipeline.run import Run


def index_generation(run: Run) -> SpanIndex:
    """The run's span index: reused when ``run`` holds it from the same parameters and model,
    otherwise built from the trained tokenizer's ids of the accepted documents."""
    trained = train_generation(run)
    if manifest.check(run.directory, manifest.GEN_INDEX, run.params):
        return SpanIndex.open(run.directory / "index")
    index = build_span_index(trained.documents, run.directory / "index", len(trained.tokenizer))
    manifest.write(run.directory, manifest.GEN_INDEX, run.params)
    return index
