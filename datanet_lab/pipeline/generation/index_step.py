"""Generation step 3, index: the span index of the training documents' token ids, in ``index/``;
index document ``i`` is accepted document ``i`` (submission order). ``span_engine`` picks the
engine that answers its queries (:data:`attribution.spans.ENGINES`, the same spans either way):
``infini_gram`` builds its suffix array ``table.0``, ``reference`` matches in memory."""

from __future__ import annotations

from attribution.spans import SpanIndex, build_span_index
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.generation.train_step import train_generation
from datanet_lab.pipeline.run import Run


def index_generation(run: Run) -> SpanIndex:
    """The run's span index: reused when ``run`` holds it from the same parameters and model,
    otherwise built from the trained tokenizer's ids of the accepted documents; queried by the
    ``span_engine`` engine."""
    trained = train_generation(run)
    engine = run.params["span_engine"]
    if manifest.check(run.directory, manifest.GEN_INDEX, run.params):
        return SpanIndex.open(run.directory / "index", engine)
    index = build_span_index(trained.documents, run.directory / "index", len(trained.tokenizer), engine)
    manifest.write(run.directory, manifest.GEN_INDEX, run.params)
    return index
