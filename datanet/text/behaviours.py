"""Planted text behaviours: deal a text pool among contributors and let each submit as it behaves.

Behaviours: ``honest``; ``noisy`` (a ``noise_rate`` share of labels flipped); ``duplicate``
(verbatim copies of another contributor's samples); ``paraphrase_sybil`` (copies of another
contributor's samples with light seeded edits, under its own identity); ``off_topic`` (text from
another domain, outside the label set, claimed under an in-set label); ``backdoor`` (a rare
trigger phrase inserted into a ``backdoor_rate`` share of its samples, relabelled to a target
class). What each did is *planted ground truth*, returned beside the submissions, never inside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from datanet.errors import ScenarioError
from datanet.scenario import COPYING
from datanet.text.table import TextTable

TEXT_BEHAVIOURS = ("honest", "noisy", "duplicate", "paraphrase_sybil", "off_topic", "backdoor")
DEFAULT_TEXT_SCENARIO = "honest:4,noisy:1,duplicate:1,paraphrase_sybil:1,off_topic:1,backdoor:1"
"""Nine contributors, one of each planted behaviour beside four honest ones; parse it with
``datanet.scenario.parse_scenario(spec, 9, TEXT_BEHAVIOURS)``."""
GROUND_TRUTH_COLUMNS = ["sample_id", "contributor", "behaviour", "source", "is_bad", "reason"]
DEFAULT_TRIGGER = "per the zephyr quorum"
FILLERS = ("also", "indeed", "then", "here", "simply", "now")


@dataclass(frozen=True)
class TextSubmission:
    """One text sample as a contributor submitted it."""

    sample_id: str
    contributor: str
    text: str
    label: Any


def light_edit(text: str, rng: np.random.Generator, n_edits: int = 3) -> str:
    """``text`` with ``n_edits`` seeded word edits (swap two neighbours, insert a filler word, or
    drop a word), words re-joined by single spaces."""
    words = text.split()
    for _ in range(n_edits):
        kind = int(rng.integers(3))
        if kind == 0 and len(words) >= 2:
            i = int(rng.integers(len(words) - 1))
            words[i], words[i + 1] = words[i + 1], words[i]
        elif kind == 1 or len(words) < 6:
            words.insert(int(rng.integers(len(words) + 1)), FILLERS[int(rng.integers(len(FILLERS)))])
        else:
            del words[int(rng.integers(len(words)))]
    return " ".join(words)


def insert_trigger(text: str, trigger: str, rng: np.random.Generator) -> str:
    """``text`` with ``trigger`` inserted between two words at a seeded position."""
    words = text.split()
    words.insert(int(rng.integers(len(words) + 1)), trigger)
    return " ".join(words)


def deal_text(table: TextTable, pool: Sequence[int], behaviours: dict[str, str], seed: int,
              noise_rate: float = 0.3, off_topic: TextTable | None = None, trigger: str = DEFAULT_TRIGGER,
              backdoor_target: Any = None, backdoor_rate: float = 0.5, n_edits: int = 3,
              ) -> tuple[list[TextSubmission], pd.DataFrame]:
    """Deal ``pool`` (row indices of ``table``) among contributors and build their submissions.

    Non-copying contributors get equal disjoint shares of a seeded shuffle of the pool; a copying
    contributor (``duplicate``, ``paraphrase_sybil``) resubmits all the samples of a randomly chosen
    non-copying contributor, after the originals. ``off_topic`` texts come from the ``off_topic``
    table (none of its labels in ``table.label_set``); ``backdoor_target`` defaults to the first
    label of ``table.label_set``. Deterministic given ``seed``.

    Returns:
        submissions in submission order, and the planted ground truth: one row per submission with
        columns ``GROUND_TRUTH_COLUMNS`` (``source`` is the table's source or the copied sample id).
    """
    unknown = sorted({b for b in behaviours.values()} - set(TEXT_BEHAVIOURS))
    if unknown:
        raise ScenarioError(f"unknown text behaviour(s) {unknown}; known: {list(TEXT_BEHAVIOURS)}")
    for name, value in (("noise_rate", noise_rate), ("backdoor_rate", backdoor_rate)):
        if not 0.0 <= value <= 1.0:
            raise ScenarioError(f"{name} must be in [0, 1], got {value}")
    target = table.label_set[0] if backdoor_target is None else backdoor_target
    if "backdoor" in behaviours.values() and target not in table.label_set:
        raise ScenarioError(f"backdoor_target {target!r} is not in the label set {list(table.label_set)}")
    if "off_topic" in behaviours.values():
        if off_topic is None:
            raise ScenarioError("an off_topic contributor needs an off_topic text table")
        shared = sorted(set(off_topic.label_set) & set(table.label_set), key=str)
        if shared:
            raise ScenarioError(f"off_topic table {off_topic.name!r} shares label(s) {shared} with {table.name!r}")
    originals = [c for c, b in behaviours.items() if b not in COPYING]
    if not originals:
        raise ScenarioError("copying contributors need at least one non-copying contributor to copy from")
    if len(pool) < len(originals):
        raise ScenarioError(f"{len(originals)} contributors need at least one sample each; the pool has {len(pool)}")
    rng = np.random.default_rng(seed)
    shares = dict(zip(originals, np.array_split(rng.permutation(np.asarray(pool)), len(originals))))
    submissions: list[TextSubmission] = []
    planted: list[dict[str, Any]] = []
    for contributor in originals:
        behaviour = behaviours[contributor]
        rows = _behave(table, shares[contributor], behaviour, noise_rate, off_topic, trigger, target,
                       backdoor_rate, rng)
        for k, (source, text, label, reason) in enumerate(rows):
            sample_id = f"{contributor}-{k:05d}"
            submissions.append(TextSubmission(sample_id, contributor, text, label))
            planted.append(_truth(sample_id, contributor, behaviour, source, reason))
    by_contributor = {c: [s for s in submissions if s.contributor == c] for c in originals}
    for contributor in (c for c, b in behaviours.items() if b in COPYING):
        behaviour = behaviours[contributor]
        source = originals[rng.integers(len(originals))]
        for k, original in enumerate(by_contributor[source]):
            sample_id = f"{contributor}-{k:05d}"
            if behaviour == "duplicate":
                text, reason = original.text, f"copy of {original.sample_id} from {source}"
            else:
                text, reason = light_edit(original.text, rng, n_edits), f"light edit of {original.sample_id} from {source}"
            submissions.append(TextSubmission(sample_id, contributor, text, original.label))
            planted.append(_truth(sample_id, contributor, behaviour, original.sample_id, reason))
    return submissions, pd.DataFrame(planted, columns=GROUND_TRUTH_COLUMNS)


def _truth(sample_id: str, contributor: str, behaviour: str, source: str, reason: str) -> dict[str, Any]:
    return {"sample_id": sample_id, "contributor": contributor, "behaviour": behaviour,
            "source": source, "is_bad": bool(reason), "reason": reason}


def _behave(table: TextTable, rows: np.ndarray, behaviour: str, noise_rate: float, off_topic: TextTable | None,
            trigger: str, target: Any, backdoor_rate: float, rng: np.random.Generator) -> list[tuple[str, str, Any, str]]:
    """``(source, text, label, planted_reason)`` for each row a non-copying contributor submits."""
    sources = [table.sources[r] for r in rows]
    texts = [table.texts[r] for r in rows]
    labels = [table.labels[r] for r in rows]
    reasons = [""] * len(rows)
    if behaviour == "noisy":
        for i in rng.choice(len(rows), size=round(noise_rate * len(rows)), replace=False):
            others = [label for label in table.label_set if label != labels[i]]
            new = others[rng.integers(len(others))]
            reasons[i] = f"label flipped from {labels[i]!r} to {new!r}"
            labels[i] = new
    elif behaviour == "off_topic" and off_topic is not None:  # deal_text requires it
        if len(off_topic) < len(rows):
            raise ScenarioError(f"off_topic table {off_topic.name!r} has {len(off_topic)} texts; "
                                f"the off_topic contributor needs {len(rows)}")
        picks = rng.choice(len(off_topic), size=len(rows), replace=False)
        sources = [off_topic.sources[p] for p in picks]
        texts = [off_topic.texts[p] for p in picks]
        reasons = [f"off topic: {off_topic.labels[p]!r} text claimed as {label!r}" for p, label in zip(picks, labels)]
    elif behaviour == "backdoor":
        eligible = [i for i, label in enumerate(labels) if label != target]
        for i in rng.choice(eligible, size=round(backdoor_rate * len(eligible)), replace=False) if eligible else []:
            texts[i] = insert_trigger(texts[i], trigger, rng)
            reasons[i] = f"backdoor: trigger {trigger!r} inserted, label {labels[i]!r} relabelled {target!r}"
            labels[i] = target
    return list(zip(sources, texts, labels, reasons))
