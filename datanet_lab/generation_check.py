"""Re-check every ``generation_payment`` of a generation run offline, unit by unit.

For each entry the checker recomputes, from the run's files alone and without the suffix-array
engine: the training documents' token ids (the dataset's accepted texts through the trained
tokenizer, whose SHA-256 must equal the index corpus' and the evidence's), the spans of the
generated tokens (:class:`attribution.spans.ReferenceSpanMatcher`, numpy + pydivsufsort), their
occurrences (document sample id, content hash, offset), the contributor credit and the integer
split of the fee. Each payment must also be for a generation the run made (its token ids as in
``generations.jsonl``, whose bytes the generate step's manifest records), at the pay step's fee
and span limits, and paid once. A generation is paid once: a later entry for a generation already paid fails,
however well its evidence re-checks. The ledger itself is verified first (signatures, chain,
Merkle tree). A reviewer needs the run directory's ``dataset/``, ``index/`` (its corpus files:
``table.0`` is not read), ``training/``, ``manifests/``, ``generations.jsonl`` and ``ledger.sqlite``;
a file among them that cannot be read is one :class:`~datanet.errors.DataSourceError` naming it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from safetensors import SafetensorError

import ledger
from attribution.base import AttributionError
from attribution.spans import ReferenceSpanMatcher, SpanIndex
from datanet.errors import DataSourceError
from datanet.models import lm
from datanet.text.lm_datanet import FILE_NAME, LMDatanet
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.generation.pay_step import RULE, corpus, credit_spans, evidence, payment
from datanet_lab.provenance import file_sha256
from ledger.schemas import ANY, DIGEST, NUMBER, TEXT, Field, Schema, schema_problem

CREDIT_RTOL = 1e-9
"""Relative tolerance on recomputed float credit (the same arithmetic in the same order gives the
same value; the tolerance covers another machine's libm)."""
UNREADABLE = (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError)
"""What reading a damaged run file raises: not JSON, a missing field, truncated weights, ..."""
TOKEN_IDS = Field("a list of integer token ids", lambda v: type(v) is list and all(type(t) is int for t in v))
EVIDENCE = Schema({
    "dataset_version": TEXT, "index_sha256": DIGEST, "model_sha256": DIGEST, "min_len": ANY, "max_count": ANY,
    "prompt_ids": TOKEN_IDS, "generated_ids": TOKEN_IDS, "spans": Field("a list", lambda v: type(v) is list),
    "credit": Field("a JSON object of finite numbers", lambda v: type(v) is dict and all(map(NUMBER.accepts, v.values()))),
})
"""The ``evidence`` of a ``generation_payment`` (:func:`datanet_lab.pipeline.generation.pay_step.evidence`);
the limits are compared with the run's, so any value is read."""
T = TypeVar("T")


@dataclass(frozen=True)
class GenerationCheck:
    """The verdict on one ``generation_payment`` entry (ledger sequence number ``seq``)."""

    seq: int
    generation_id: str
    ok: bool
    problem: str

    def __str__(self) -> str:
        return f"{'OK' if self.ok else 'FAILED'} {self.generation_id} (entry {self.seq})" + ("" if self.ok else f": {self.problem}")


def check_generations(run_dir: str | Path) -> list[GenerationCheck]:
    """Check every ``generation_payment`` entry of the generation run in ``run_dir`` (the
    ``generation/`` folder of a batch run); one :class:`GenerationCheck` per entry, in ledger order.

    Raises:
        ledger.LedgerIntegrityError: the ledger fails verification (nothing else is trusted then).
        datanet.errors.DataSourceError: the run lacks its dataset, or a file it reads is damaged
            (not JSON, truncated, missing a field); the message names the file.
        FileNotFoundError: the run lacks its index or checkpoints.
        attribution.base.AttributionError: the index's files disagree with its own record (e.g. the
            SHA-256 of its corpus file).
    """
    run_dir = Path(run_dir)
    report = ledger.verify(run_dir / "ledger.sqlite")
    if not report.ok:
        raise ledger.LedgerIntegrityError(f"{run_dir / 'ledger.sqlite'}: {report}")
    dn = _read(run_dir / "dataset" / FILE_NAME, lambda: LMDatanet.load(run_dir / "dataset"))
    checkpoints = sorted((run_dir / "training" / "checkpoints").glob("epoch-*"))
    if not checkpoints:
        raise FileNotFoundError(f"{run_dir / 'training' / 'checkpoints'}: no epoch-* checkpoint (the train step's output)")
    checkpoint = checkpoints[-1]
    model_sha256 = file_sha256(checkpoint / "model.safetensors")
    _, tokenizer = _read(checkpoint, lambda: lm.load_lm(checkpoint),
                         "cannot be loaded as the trained model (config.json, model.safetensors, tokenizer.json)")
    documents = lm.encode_documents(tokenizer, dn.train_texts)
    indexed = SpanIndex.open(run_dir / "index", "reference")  # never started: its documents are compared
    matcher = ReferenceSpanMatcher(documents, indexed.vocab_size)
    corpus_ok = [list(map(int, d)) for d in indexed.documents()] == documents
    book = ledger.Ledger(run_dir / "ledger.sqlite")
    with book:
        seq = {e.payload["sample_id"]: e.seq for e in book.entries("contribution")}
        entries = list(book.entries("generation_payment"))
    docs = _read(run_dir / "ledger.sqlite", lambda: corpus(dn, documents, indexed.vocab_size, seq),
                 "does not record the dataset's contributions")
    terms = _pay_terms(run_dir)
    context = {"dataset_version": dn.version, "index_sha256": indexed.corpus_sha256, "model_sha256": model_sha256,
               "min_len": terms["gen_min_span"], "max_count": terms["gen_max_count"]}
    generated = _generations(run_dir)
    checks = []
    paid_by: dict[str, int] = {}  # generation id -> the entry that paid it and re-checks
    for entry in entries:
        gen_id = entry.payload["generation_id"]
        problem = None if corpus_ok else "the index's documents are not the dataset's texts through the model's tokenizer"
        problem = problem or schema_problem("generation_payment evidence", EVIDENCE, entry.payload["evidence"])
        problem = problem or _run_problem(entry.payload, generated, terms["generation_fee"])
        problem = problem or _payment_problem(entry.payload, matcher, docs, context)
        if not problem and gen_id in paid_by:
            problem = f"generation {gen_id} is paid again: entry {paid_by[gen_id]} paid it first"
        if not problem:
            paid_by[gen_id] = entry.seq
        checks.append(GenerationCheck(entry.seq, gen_id, *_verdict(problem)))
    return checks


def _read(path: Path, read: Callable[[], T], what: str = "cannot be read") -> T:
    """``read()``, which reads ``path``; a damaged file (:data:`UNREADABLE`) is one
    :class:`DataSourceError`: ``path``, ``what`` and the error on one line."""
    try:
        return read()
    except UNREADABLE as error:
        detail = " ".join(str(error).split())[:300]
        raise DataSourceError(f"{path}: {what}: {type(error).__name__}: {detail}") from error


def _pay_terms(run_dir: Path) -> dict[str, Any]:
    """The pay step's parameters (``manifests/pay.json``): the span limits and the fee it paid by."""
    path = run_dir / manifest.MANIFEST_DIR / "pay.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the pay step's manifest is missing (no generation was paid in this run)")
    return _read(path, lambda: {name: json.loads(path.read_text())["params"][name]
                                for name in ("gen_min_span", "gen_max_count", "generation_fee")})


def _generations(run_dir: Path) -> dict[str, dict[str, Any]]:
    """``generations.jsonl`` by generation id, after checking its bytes against the generate step's
    manifest (so a payment's token ids are compared with what the model generated)."""
    path, step = run_dir / "generations.jsonl", run_dir / manifest.MANIFEST_DIR / "generate.json"
    recorded = _read(step, lambda: json.loads(step.read_text())["outputs"]["generations.jsonl"])
    if _read(path, lambda: file_sha256(path)) != recorded:
        raise AttributionError(f"{path}: SHA-256 {file_sha256(path)}, the generate step recorded {recorded}")
    return _read(path, lambda: {r["generation"]: r for r in map(json.loads, path.read_text().splitlines())})


def _run_problem(paid: dict[str, Any], generated: dict[str, dict[str, Any]], fee: int) -> str | None:
    """Whether the payment is for a generation the run made, with its token ids, at the run's fee."""
    made = generated.get(paid["generation_id"])
    if made is None:
        return f"the run made no generation {paid['generation_id']!r} (generations.jsonl)"
    for name in ("prompt_ids", "generated_ids"):
        if paid["evidence"].get(name) != made[name]:
            return f"evidence {name} differ from the run's generation {paid['generation_id']} in generations.jsonl"
    if paid["fee"] != fee:
        return f"fee {paid['fee']} units, the run pays {fee} per generation"
    if paid["rule"] != RULE:
        return f"rule {paid['rule'][:60]!r}... is not the run's credit rule"
    return None


def _verdict(problem: str | None) -> tuple[bool, str]:
    return problem is None, problem or ""


def _payment_problem(paid: dict[str, Any], matcher: ReferenceSpanMatcher, docs: Any, context: dict[str, Any]) -> str | None:
    """What the recomputation of one payment disagrees with, or ``None``."""
    proof = paid["evidence"]
    for name, value in context.items():
        if proof.get(name) != value:
            return f"evidence {name} is {proof.get(name)!r}, the run's is {value!r}"
    try:
        generation = lm.Generation("", tuple(proof["prompt_ids"]), tuple(proof["generated_ids"]), "")
        spans = matcher.spans(list(generation.generated_ids), proof["min_len"], proof["max_count"])
    except (KeyError, TypeError, ValueError) as error:
        return f"evidence cannot be re-run: {error!r}"
    credit = credit_spans(spans, generation.generated_ids, docs)
    expected = payment(paid["generation_id"], paid["fee"], credit.credit, evidence(generation, spans, credit, docs, context))
    if proof["spans"] != expected["evidence"]["spans"]:
        return f"spans differ: the evidence lists {len(proof['spans'])}, the matcher finds {len(spans)} " \
               f"({_first_difference(proof['spans'], expected['evidence']['spans'])})"
    claimed, recomputed = proof.get("credit", {}), expected["evidence"]["credit"]
    if set(claimed) != set(recomputed) or any(not math.isclose(claimed[c], v, rel_tol=CREDIT_RTOL) for c, v in recomputed.items()):
        return f"credit differs: evidence {claimed}, recomputed {recomputed}"
    for name in ("payouts", "unallocated"):
        if paid[name] != expected[name]:
            return f"{name} differ: the entry has {paid[name]}, the split of the recomputed credit gives {expected[name]}"
    return None


def _first_difference(claimed: list, recomputed: list) -> str:
    for k, (a, b) in enumerate(zip(claimed, recomputed)):
        if a != b:
            return f"span {k}: {a} vs {b}"[:300]
    return f"{len(claimed)} vs {len(recomputed)} spans"
