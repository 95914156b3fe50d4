"""Deal a pool of rows among contributors and let each submit according to its behaviour.

What each contributor did to its data is *planted ground truth*: it is returned beside the
submissions, never inside them, so validators and attribution cannot see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from datanet.data import Table
from datanet.errors import ScenarioError

GROUND_TRUTH_COLUMNS = ["sample_id", "contributor", "behaviour", "source_row", "is_bad", "reason"]


@dataclass(frozen=True)
class Submission:
    """One sample as a contributor submitted it (raw values: validators judge them)."""

    sample_id: str
    contributor: str
    features: tuple[Any, ...]
    label: Any


def deal(
    table: Table, pool: np.ndarray, behaviours: dict[str, str], noise_rate: float, seed: int
) -> tuple[list[Submission], pd.DataFrame]:
    """Deal ``pool`` rows of ``table`` among contributors and build their submissions.

    Non-duplicate contributors get equal disjoint shares of a seeded shuffle of the pool;
    a duplicate contributor resubmits, under its own ids, all the samples of a randomly chosen
    non-duplicate contributor (it submits after the originals, as a copier must).

    Returns:
        submissions in submission order, and the planted ground truth: one row per submission
        with columns ``GROUND_TRUTH_COLUMNS`` (``is_bad`` with a human ``reason``).
    """
    if not 0.0 <= noise_rate <= 1.0:
        raise ScenarioError(f"noise_rate must be in [0, 1], got {noise_rate}")
    originals = [c for c, b in behaviours.items() if b != "duplicate"]
    if len(pool) < len(originals):
        raise ScenarioError(f"{len(originals)} contributors need at least one sample each; the pool has {len(pool)}")
    rng = np.random.default_rng(seed)
    shares = dict(zip(originals, np.array_split(rng.permutation(pool), len(originals))))
    planted: list[dict[str, Any]] = []
    submissions: list[Submission] = []
    for contributor in originals:
        rows = _behave(table, shares[contributor], behaviours[contributor], noise_rate, rng)
        for k, (row, features, label, reason) in enumerate(rows):
            sample_id = f"{contributor}-{k:05d}"
            submissions.append(Submission(sample_id, contributor, features, label))
            planted.append(_truth(sample_id, contributor, behaviours[contributor], row, reason))
    by_contributor = {c: [s for s in submissions if s.contributor == c] for c in originals}
    for contributor in (c for c, b in behaviours.items() if b == "duplicate"):
        source = originals[rng.integers(len(originals))]
        for k, original in enumerate(by_contributor[source]):
            sample_id = f"{contributor}-{k:05d}"
            submissions.append(Submission(sample_id, contributor, original.features, original.label))
            reason = f"copy of {original.sample_id} from {source}"
            planted.append(_truth(sample_id, contributor, "duplicate", -1, reason))
    return submissions, pd.DataFrame(planted, columns=GROUND_TRUTH_COLUMNS)


def _truth(sample_id: str, contributor: str, behaviour: str, row: int, reason: str) -> dict[str, Any]:
    return {
        "sample_id": sample_id,
        "contributor": contributor,
        "behaviour": behaviour,
        "source_row": int(row),
        "is_bad": bool(reason),
        "reason": reason,
    }


def _behave(
    table: Table, rows: np.ndarray, behaviour: str, noise_rate: float, rng: np.random.Generator
) -> list[tuple[int, tuple, Any, str]]:
    """``(source_row, features, label, planted_reason)`` for each row a contributor submits."""
    features = [tuple(table.features[r].tolist()) for r in rows]
    labels = table.labels[rows].tolist()
    reasons = [""] * len(rows)
    if behaviour == "noisy":
        if len(table.label_set) < 2:
            raise ScenarioError(f"a noisy contributor needs at least 2 labels to flip between; {table.name!r} has {list(table.label_set)}")
        flips = rng.choice(len(rows), size=round(noise_rate * len(rows)), replace=False)
        for i in flips:
            others = [label for label in table.label_set if label != labels[i]]
            new = others[rng.integers(len(others))]
            reasons[i] = f"label flipped from {labels[i]!r} to {new!r}"
            labels[i] = new
    elif behaviour == "out_of_domain":
        numeric = table.features[table.valid_rows()].astype(np.float64)
        low, high = numeric.min(axis=0), numeric.max(axis=0)
        features = [tuple((low + high - np.asarray(f, dtype=np.float64)).tolist()) for f in features]
        reasons = ["out of domain: features reflected across the training range"] * len(rows)
    elif behaviour == "malformed":
        features, labels, reasons = _malform(features, labels, table)
    return [(int(r), f, label, why) for r, f, label, why in zip(rows, features, labels, reasons)]


def _malform(features: list[tuple], labels: list, table: Table) -> tuple[list[tuple], list, list[str]]:
    """Break each row in turn one of four ways validators must catch."""
    broken_features, broken_labels, reasons = [], [], []
    for i, (row, label) in enumerate(zip(features, labels)):
        kind = i % 4
        if kind == 0:
            row, why = row[:-1], "malformed: one feature dropped"
        elif kind == 1:
            row, why = (float("nan"),) + row[1:], "malformed: NaN feature"
        elif kind == 2:
            label, why = "not-a-label", "malformed: label outside the label set"
        else:
            row, why = ("n/a",) + row[1:], "malformed: text in a numeric feature"
        broken_features.append(row)
        broken_labels.append(label)
        reasons.append(why)
    return broken_features, broken_labels, reasons
