"""Validators: accept or reject every submission with a reason; name the accepted set by its hash.

Checks, in order: width (number of features), schema (every feature a number), finiteness
(no NaN/inf, no magnitude beyond float32's: the models compute in float32), label in the label
set, and exact duplicate content (by SHA-256 of features and label) of a sample accepted earlier.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from datanet.contributors import Submission
from datanet.data import FLOAT32_MAX, is_float32_value, is_number

ACCEPTED = "accepted"


@dataclass(frozen=True)
class Schema:
    """What a valid sample looks like."""

    n_features: int
    label_set: tuple


@dataclass(frozen=True)
class Decision:
    """A validator's verdict on one submission; ``reason`` is ``"accepted"`` or why not."""

    sample_id: str
    contributor: str
    accepted: bool
    reason: str
    content_hash: str


def content_hash(features: Sequence[Any], label: Any) -> str:
    """SHA-256 (hex) of a sample's content: its feature values and label, as JSON text."""
    # Numbers hash by value: 1, 1.0 and -0.0/0.0 are the same content, so a copier cannot
    # slip past the duplicate check by changing number types.
    values = [float(v) + 0.0 if is_number(v) else v for v in features]
    text = json.dumps([values, label], default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def validate(submissions: Iterable[Submission], schema: Schema) -> list[Decision]:
    """Judge ``submissions`` in order; the first copy of some content wins, later copies are rejected."""
    seen: dict[str, str] = {}
    decisions = []
    for submission in submissions:
        digest = content_hash(submission.features, submission.label)
        reason = _sample_problem(submission, schema)
        if reason is None and digest in seen:
            reason = f"exact duplicate of {seen[digest]}"
        if reason is None:
            seen[digest] = submission.sample_id
        decisions.append(Decision(submission.sample_id, submission.contributor, reason is None, reason or ACCEPTED, digest))
    return decisions


def dataset_version(decisions: Iterable[Decision]) -> str:
    """Name of the accepted set: ``dv-`` + SHA-256 of its sorted content hashes (order-free)."""
    hashes = sorted(d.content_hash for d in decisions if d.accepted)
    return "dv-" + hashlib.sha256("\n".join(hashes).encode("ascii")).hexdigest()


def _sample_problem(submission: Submission, schema: Schema) -> str | None:
    features = submission.features
    if len(features) != schema.n_features:
        return f"wrong width: {len(features)} features, expected {schema.n_features}"
    for index, value in enumerate(features):
        if not is_number(value):
            return f"schema: feature {index} is {value!r} ({type(value).__name__}), expected a number"
    for index, value in enumerate(features):
        if not is_float32_value(value):
            if isinstance(value, numbers.Integral) or math.isfinite(value):
                return f"value {value!r} in feature {index} is beyond float32's range (magnitude <= {FLOAT32_MAX:.4g})"
            return f"non-finite value {value!r} in feature {index}"
    if submission.label not in schema.label_set:
        return f"label {submission.label!r} outside the label set {list(schema.label_set)}"
    return None
