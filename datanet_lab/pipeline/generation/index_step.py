"""Generation step 3, index: the span index of the training documents' token ids, in ``index/``;
index document ``i`` is accepted document ``i`` (submission order). ``span_engine`` picks the
engine that answers its queries (:data:`attribution.spans.ENGINES`, the same spans either way):
``vectorized`` and ``infini_gram`` search the suffix array ``table.0`` built by infini-gram's
indexer, ``reference`` matches in memory."""

from __future__ import annotations

from pathlib import Path

from attribution.spans import SpanIndex, build_span_index
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.engine import Procedure, run_step
from datanet_lab.pipeline.generation import build_step as gen_build
from datanet_lab.pipeline.generation import train_step as gen_train
from datanet_lab.pipeline.generation.train_step import train_generation
from datanet_lab.pipeline.run import Run


def index_generation(run: Run) -> SpanIndex:
    """The run's span index: reused when ``run`` holds it from the same parameters and model,
    otherwise built from the trained tokenizer's ids of the accepted documents; queried by the
    ``span_engine`` engine."""
    return run_step(run, PROCEDURE)


def _compute(run: Run, staging: Path) -> None:
    trained = train_generation(run)
    build_span_index(trained.documents, staging / "index", len(trained.tokenizer), run.params["span_engine"])


PROCEDURE = Procedure(manifest.GEN_INDEX, _compute,
                      lambda run: SpanIndex.open(run.directory / "index", run.params["span_engine"]),
                      requires=(gen_build.PROCEDURE, gen_train.PROCEDURE))
