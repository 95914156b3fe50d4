"""A text Datanet: the accepted, versioned training texts built from contributors' submissions.

Build order as for tabular Datanets (:mod:`datanet.datanet`): hold out a seeded test set, deal the
rest among contributors (:func:`~datanet.text.behaviours.deal_text`), validate every submission
(:func:`~datanet.text.validation.validate_texts`, texts over ``max_tokens`` rejected, never
truncated), keep the accepted samples as a dataset version. The planted ground truth is returned
beside the Datanet, never inside it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datanet.datanet import TEST_FRACTION
from datanet.errors import DataSourceError, DatanetError
from datanet.text.behaviours import DEFAULT_TRIGGER, TextSubmission, deal_text
from datanet.text.table import TextTable
from datanet.text.validation import sample_reason, validate_texts
from datanet.validation import ACCEPTED, Decision, content_hash, dataset_version

MAX_TOKENS = 64
"""Default token limit (MiniLM tokens, [CLS] and [SEP] included): the model sees every text whole."""
SPLIT_STREAM = 1
"""Mixed into the seed of the test split so it draws apart from the dealing (seeded by ``seed`` alone)."""
DECISION_COLUMNS = ["sample_id", "contributor", "accepted", "reason", "content_hash"]


@dataclass
class TextDatanet:
    """The accepted training texts and the held-out test texts, labels as class indices.

    ``train_texts`` (n_accepted,) with ``train_y`` (n_accepted,) int64 indices into ``label_set``;
    ``train_ids``/``train_contributors`` (n_accepted,) str say who submitted text ``i``;
    ``test_texts`` (n_test,) with ``test_y`` (n_test,) int64. ``decisions`` has one row per
    submission (``DECISION_COLUMNS``; ``reason`` is ``"accepted"`` or why not). Every text holds at
    most ``max_tokens`` tokens. ``provenance`` is the source table's (package versions, corpus hash,
    parameters) plus ``max_tokens``.
    """

    name: str
    version: str
    label_set: tuple
    contributors: tuple[str, ...]
    decisions: pd.DataFrame
    train_texts: tuple[str, ...]
    train_y: np.ndarray
    train_ids: np.ndarray
    train_contributors: np.ndarray
    test_texts: tuple[str, ...]
    test_y: np.ndarray
    provenance: dict
    max_tokens: int

    @property
    def n_classes(self) -> int:
        return len(self.label_set)

    def save(self, directory: str | Path) -> None:
        """Write ``meta.json``, ``decisions.csv``, ``train.jsonl`` and ``test.jsonl`` (one JSON
        object per line, ASCII-escaped so no text can break a line) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"name": self.name, "version": self.version, "label_set": list(self.label_set),
                "contributors": list(self.contributors), "provenance": self.provenance, "max_tokens": self.max_tokens}
        (directory / "meta.json").write_text(json.dumps(meta, indent=2))
        self.decisions.to_csv(directory / "decisions.csv", index=False)
        train = zip(self.train_ids.tolist(), self.train_contributors.tolist(), self.train_texts, self.train_y)
        _write_jsonl(directory / "train.jsonl",
                     [{"sample_id": i, "contributor": c, "text": t, "y": int(y)} for i, c, t, y in train])
        _write_jsonl(directory / "test.jsonl", [{"text": t, "y": int(y)} for t, y in zip(self.test_texts, self.test_y)])

    @classmethod
    def load(cls, directory: str | Path) -> TextDatanet:
        """Read a TextDatanet written by :meth:`save`."""
        directory = Path(directory)
        meta = json.loads((directory / "meta.json").read_text())
        train = _read_jsonl(directory / "train.jsonl")
        test = _read_jsonl(directory / "test.jsonl")
        columns = {**dict.fromkeys(["sample_id", "contributor", "reason", "content_hash"], str), "accepted": bool}
        return cls(
            name=meta["name"],
            version=meta["version"],
            label_set=tuple(meta["label_set"]),
            contributors=tuple(meta["contributors"]),
            decisions=pd.read_csv(directory / "decisions.csv", keep_default_na=False, dtype=columns),
            train_texts=tuple(r["text"] for r in train),
            train_y=np.array([r["y"] for r in train], dtype=np.int64),
            train_ids=np.array([r["sample_id"] for r in train], dtype=str),
            train_contributors=np.array([r["contributor"] for r in train], dtype=str),
            test_texts=tuple(r["text"] for r in test),
            test_y=np.array([r["y"] for r in test], dtype=np.int64),
            provenance=meta["provenance"],
            max_tokens=meta["max_tokens"],
        )


@dataclass
class BuiltTextDatanet:
    """What :func:`build_text_datanet` made: the Datanet, every submission, and the planted truth
    (``datanet.text.behaviours.GROUND_TRUTH_COLUMNS``, one row per submission)."""

    datanet: TextDatanet
    submissions: list[TextSubmission]
    ground_truth: pd.DataFrame


def split_text(table: TextTable, seed: int, count_tokens: Callable[[str], int], max_tokens: int,
               ) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (pool, test): a seeded ``TEST_FRACTION`` of the rows that pass validation's
    single-sample rules (within ``max_tokens``, label in the label set, ...) is held out, so
    every test text fits the model; every other row stays in the pool, where contributors submit
    it and validators judge it. Held-out texts are not checked against the submissions.

    Raises:
        DataSourceError: fewer than 2 rows pass those rules.
    """
    valid_labels = set(table.label_set)
    eligible = [i for i, (text, label) in enumerate(zip(table.texts, table.labels))
                if not sample_reason(text, label, valid_labels, max_tokens=max_tokens, count_tokens=count_tokens)[0]]
    if len(eligible) < 2:
        raise DataSourceError(f"text table {table.name!r} has {len(eligible)} of {len(table)} texts that pass "
                              f"validation within max_tokens {max_tokens}: too few to hold out a test set")
    n_test = held_out_count(len(eligible))
    rng = np.random.default_rng([seed, SPLIT_STREAM])
    test = np.sort(rng.choice(eligible, size=n_test, replace=False))
    return np.setdiff1d(np.arange(len(table)), test), test


def held_out_count(n_eligible: int) -> int:
    """How many of ``n_eligible`` (>= 2) valid texts :func:`split_text` holds out: a
    ``TEST_FRACTION`` of them, at least one, and at least one left in the pool."""
    return min(max(1, round(TEST_FRACTION * n_eligible)), n_eligible - 1)


def build_text_datanet(table: TextTable, behaviours: dict[str, str], seed: int, *, count_tokens: Callable[[str], int],
                       max_tokens: int, off_topic: TextTable | None = None, noise_rate: float = 0.3,
                       backdoor_rate: float = 0.5, trigger: str = DEFAULT_TRIGGER, backdoor_target: Any = None,
                       ) -> BuiltTextDatanet:
    """Build a text Datanet from ``table`` with contributors behaving as ``behaviours`` says
    (contributor id -> one of ``TEXT_BEHAVIOURS``; see :func:`~datanet.text.behaviours.deal_text`
    for ``off_topic``, ``noise_rate``, ``backdoor_rate``, ``trigger``, ``backdoor_target``).

    ``count_tokens`` counts a text's tokens as the model will see them (special tokens included);
    submissions over ``max_tokens`` are rejected. Sample ids name samples in duplicate reasons.
    Deterministic given ``seed``.

    Raises:
        DataSourceError: too few texts to hold out a test set (:func:`split_text`).
        ScenarioError: a scenario the table cannot serve (:func:`~datanet.text.behaviours.deal_text`).
        DatanetError: validators accepted no submission.
    """
    pool, test = split_text(table, seed, count_tokens, max_tokens)
    submissions, ground_truth = deal_text(table, pool, behaviours, seed, noise_rate=noise_rate, off_topic=off_topic,
                                          trigger=trigger, backdoor_target=backdoor_target, backdoor_rate=backdoor_rate)
    verdict = validate_texts([s.text for s in submissions], [s.label for s in submissions], table.label_set,
                             max_tokens=max_tokens, count_tokens=count_tokens, names=[s.sample_id for s in submissions])
    # A text sample's content is its one text and its label, hashed as the tabular validators hash a row.
    decisions = [Decision(s.sample_id, s.contributor, ok, reason or ACCEPTED, content_hash((s.text,), s.label))
                 for s, ok, reason in zip(submissions, verdict.accepted, verdict.reasons)]
    accepted = [s for s, ok in zip(submissions, verdict.accepted) if ok]
    if not accepted:
        raise DatanetError(f"validators accepted none of the {len(submissions)} submissions to {table.name!r}; "
                           f"first reason: {verdict.reasons[0]}")
    class_index = {label: i for i, label in enumerate(table.label_set)}
    datanet = TextDatanet(
        name=table.name,
        version=dataset_version(decisions),
        label_set=tuple(table.label_set),
        contributors=tuple(behaviours),
        decisions=pd.DataFrame([vars(d) for d in decisions], columns=DECISION_COLUMNS),
        train_texts=tuple(s.text for s in accepted),
        train_y=np.array([class_index[s.label] for s in accepted], dtype=np.int64),
        train_ids=np.array([s.sample_id for s in accepted], dtype=str),
        train_contributors=np.array([s.contributor for s in accepted], dtype=str),
        test_texts=tuple(table.texts[i] for i in test),
        test_y=np.array([class_index[table.labels[i]] for i in test], dtype=np.int64),
        provenance={**table.provenance, "max_tokens": max_tokens},
        max_tokens=max_tokens,
    )
    return BuiltTextDatanet(datanet, submissions, ground_truth)


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="ascii")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="ascii").split("\n") if line]
