"""Generation step 5, pay: each generation pays ``generation_fee`` units to the contributors whose
documents hold its spans, one ledger entry per generation with the evidence to re-check it.

For generation ``g`` (its generated tokens, the prompt excluded: the user wrote the prompt) the
span index gives the maximal spans of at least ``gen_min_span`` tokens that occur verbatim, at most
``gen_max_count`` times, in the training documents (:meth:`attribution.spans.SpanIndex.spans`);
:func:`attribution.spans.span_credit` turns them into contributor credit, the roll-up of
:class:`attribution.spans.SpanAttributor` scores (each span worth its unigram information content,
shared by the contributors holding it, a verbatim copy of an earlier submission earning nothing); :func:`ledger.split_positive_credit` splits the fee in exact integers
(largest remainders; a generation with no span leaves the whole fee ``unallocated``).

The ``generation_payment`` entry's ``evidence`` names everything a reviewer needs to recompute
every unit offline (:mod:`datanet_lab.generation_check`): the dataset version, the index corpus'
SHA-256, the model's weight hash, the prompt and generated token ids, the matcher's limits, each
span with every occurrence (document sample id, content hash, token offset) and the credit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import ledger
from attribution.rollup import content_clusters
from attribution.spans import Span, SpanAttributor, SpanCredit, SpanTask, span_credit, unigram_logprobs
from datanet.models import lm
from datanet.text.lm_datanet import LMDatanet
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.engine import Procedure, Record, run_step
from datanet_lab.pipeline.generation import build_step as gen_build
from datanet_lab.pipeline.generation import generate_step as gen_generate
from datanet_lab.pipeline.generation import index_step as gen_index
from datanet_lab.pipeline.generation import train_step as gen_train
from datanet_lab.pipeline.generation.build_step import build_generation
from datanet_lab.pipeline.generation.generate_step import generate_texts, generation_id
from datanet_lab.pipeline.generation.index_step import index_generation
from datanet_lab.pipeline.generation.train_step import train_generation
from datanet_lab.pipeline.run import PAYOUT_AUTHORITY, Run
from datanet_lab.provenance import file_sha256

RULE = ("span credit: the maximal spans of the generated tokens found verbatim in the training documents (at least "
        "evidence.min_len tokens, at most evidence.max_count occurrences), each worth its unigram information "
        "content, shared equally by the contributors holding it (verbatim copies count once, as the earliest "
        "submission); the fee split by largest remainders over positive credit")


@dataclass(frozen=True)
class Corpus:
    """What span credit reads about the training documents (index order = accepted order):
    ``sample_ids``, ``contributors``, ``content_hashes`` and ``order`` (the ledger sequence number of
    each document's contribution: earlier = smaller), and ``logprob`` ``(vocab,)`` unigram log p."""

    sample_ids: tuple[str, ...]
    contributors: tuple[str, ...]
    content_hashes: tuple[str, ...]
    order: np.ndarray
    logprob: np.ndarray


def corpus(dn: LMDatanet, documents: list[list[int]], vocab_size: int, contribution_seq: dict[str, int]) -> Corpus:
    """The :class:`Corpus` of ``dn``'s accepted documents (token ids ``documents``)."""
    accepted = dn.accepted
    missing = [d.sample_id for d in accepted if d.sample_id not in contribution_seq]
    if missing:
        raise ValueError(f"no contribution entry in the ledger for {len(missing)} accepted documents, e.g. {missing[0]!r}")
    return Corpus(tuple(d.sample_id for d in accepted), tuple(d.contributor for d in accepted),
                  tuple(d.content_hash for d in accepted),
                  np.array([contribution_seq[d.sample_id] for d in accepted], dtype=np.int64),
                  unigram_logprobs(documents, vocab_size))


def span_attributor(run: Run) -> tuple[SpanAttributor, Corpus]:
    """The run's :class:`~attribution.spans.SpanAttributor`, fitted on its span index and
    :class:`Corpus` under its ``gen_min_span`` and ``gen_max_count``, and that corpus."""
    dn, trained, index = build_generation(run), train_generation(run), index_generation(run)
    with run.ledger() as book:
        seq = {e.payload["sample_id"]: e.seq for e in book.entries("contribution")}
    docs = corpus(dn, trained.documents, len(trained.tokenizer), seq)
    task = SpanTask(index, docs.logprob, run.params["gen_min_span"], run.params["gen_max_count"], docs.contributors,
                    content_clusters(docs.content_hashes), docs.order)
    return SpanAttributor().fit(task), docs


def credit_spans(spans: list[Span], generated: tuple[int, ...], docs: Corpus) -> SpanCredit:
    """Contributor credit of one generation's ``spans`` (:func:`attribution.spans.span_credit`)."""
    return span_credit(spans, docs.contributors, docs.order, docs.content_hashes, docs.logprob[list(generated)])


def evidence(generation: lm.Generation, spans: list[Span], credit: SpanCredit, docs: Corpus,
             context: dict[str, Any]) -> dict[str, Any]:
    """The ``evidence`` object of a ``generation_payment`` entry (module docstring)."""
    return {
        **context,
        "prompt_ids": list(generation.prompt_ids),
        "generated_ids": list(generation.generated_ids),
        "spans": [{"start": s.start, "end": s.end, "count": s.count,
                   "occurrences": [[docs.sample_ids[d], docs.content_hashes[d], o] for d, o in zip(s.documents, s.offsets)]}
                  for s in spans],
        "credit": {c: float(v) for c, v in credit.credit.items() if v > 0},
    }


def payment(gen_id: str, fee: int, credit: pd.Series, proof: dict[str, Any]) -> dict[str, Any]:
    """The ``generation_payment`` payload: ``fee`` split over positive ``credit``, with ``proof``."""
    split = ledger.split_positive_credit(fee, credit.to_dict())
    return {"generation_id": gen_id, "fee": fee, "payouts": {c: u for c, u in sorted(split.payouts.items()) if u},
            "unallocated": split.unallocated, "rule": RULE, "evidence": proof}


def pay_generation(run: Run) -> pd.DataFrame:
    """Pay every generation of the run (module docstring): one ``generation_payment`` entry each,
    in one ledger batch; writes ``credit/generation_credit.csv`` (generation, contributor, credit,
    units) and ``credit/spans.csv`` (every span's credited contributors and shares) and returns
    the first. Paying is an action, never reused: a run directory that holds the payments from the
    same parameters returns them; other parameters stop at the manifest; a pay stopped before its
    manifest finishes when run again (:func:`~datanet_lab.pipeline.engine.run_step`)."""
    return run_step(run, PROCEDURE)


def _compute(run: Run, staging: Path) -> list[Record]:
    """Credit every generation, write ``credit/`` under ``staging``; return the payment records."""
    dn, trained, index, generations = build_generation(run), train_generation(run), index_generation(run), generate_texts(run)
    attributor, docs = span_attributor(run)
    params = run.params
    context = {"dataset_version": dn.version, "index_sha256": index.corpus_sha256,
               "model_sha256": file_sha256(trained.checkpoints[-1] / "model.safetensors"),
               "min_len": params["gen_min_span"], "max_count": params["gen_max_count"]}
    records, rows, span_rows = [], [], []
    for k, generation in enumerate(generations):
        gen_id = generation_id(k)
        spans = attributor.spans(generation.generated_ids)
        credit = credit_spans(spans, generation.generated_ids, docs)
        entry = payment(gen_id, params["generation_fee"], credit.credit, evidence(generation, spans, credit, docs, context))
        records.append(("generation_payment", PAYOUT_AUTHORITY, entry))
        rows += [(gen_id, c, float(v), entry["payouts"].get(c, 0)) for c, v in credit.credit.items()]
        span_rows.append(credit.breakdown.assign(generation=gen_id))
    (staging / "credit").mkdir()
    table = pd.DataFrame(rows, columns=["generation", "contributor", "credit", "units"])
    table.to_csv(staging / "credit" / "generation_credit.csv", index=False)
    pd.concat(span_rows, ignore_index=True).to_csv(staging / "credit" / "spans.csv", index=False)
    return records


PROCEDURE = Procedure(manifest.GEN_PAY, _compute, lambda run: pd.read_csv(run.directory / "credit" / "generation_credit.csv"),
                      records=lambda run, records: records,
                      requires=(gen_build.PROCEDURE, gen_train.PROCEDURE, gen_index.PROCEDURE, gen_generate.PROCEDURE))
