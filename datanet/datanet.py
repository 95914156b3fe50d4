"""A Datanet: the accepted, versioned training set built from contributors' submissions.

Build order: load a table, hold out a test set, deal the rest among contributors, validate every
submission, keep the accepted samples as a dataset version. The planted ground truth of the
scenario is returned beside the Datanet and saved to a separate file, never inside it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from datanet.contributors import Submission, deal
from datanet.data import Table, split_test
from datanet.errors import DatanetError
from datanet.validation import Schema, dataset_version, validate

TEST_FRACTION = 0.2


@dataclass
class Datanet:
    """The accepted training set and the held-out test set, in class-index form.

    ``train_x`` (n_accepted, n_features) float32, ``train_y`` (n_accepted,) int64 class indices,
    ``train_ids``/``train_contributors`` (n_accepted,) say who submitted row ``i``;
    ``decisions`` has one row per submission (accepted or not, and why).
    """

    name: str
    version: str
    schema: Schema
    feature_names: tuple[str, ...]
    image_shape: tuple[int, int] | None
    contributors: tuple[str, ...]
    decisions: pd.DataFrame
    train_x: np.ndarray
    train_y: np.ndarray
    train_ids: np.ndarray
    train_contributors: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    @property
    def n_classes(self) -> int:
        return len(self.schema.label_set)

    def save(self, directory: str | Path) -> None:
        """Write ``meta.json``, ``decisions.csv``, ``train.npz`` and ``test.npz`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "name": self.name,
            "version": self.version,
            "schema": asdict(self.schema),
            "feature_names": list(self.feature_names),
            "image_shape": self.image_shape,
            "contributors": list(self.contributors),
        }
        (directory / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        self.decisions.to_csv(directory / "decisions.csv", index=False)
        np.savez(directory / "train.npz", x=self.train_x, y=self.train_y, ids=self.train_ids, contributors=self.train_contributors)
        np.savez(directory / "test.npz", x=self.test_x, y=self.test_y)

    @classmethod
    def load(cls, directory: str | Path) -> Datanet:
        """Read a Datanet written by :meth:`save`."""
        directory = Path(directory)
        meta = json.loads((directory / "meta.json").read_text())
        train = np.load(directory / "train.npz")
        test = np.load(directory / "test.npz")
        schema = meta["schema"]
        return cls(
            name=meta["name"],
            version=meta["version"],
            schema=Schema(schema["n_features"], tuple(schema["label_set"])),
            feature_names=tuple(meta["feature_names"]),
            image_shape=tuple(meta["image_shape"]) if meta["image_shape"] else None,
            contributors=tuple(meta["contributors"]),
            decisions=pd.read_csv(directory / "decisions.csv", keep_default_na=False),
            train_x=train["x"],
            train_y=train["y"],
            train_ids=train["ids"],
            train_contributors=train["contributors"],
            test_x=test["x"],
            test_y=test["y"],
        )


@dataclass
class BuiltDatanet:
    """What :func:`build_datanet` made: the Datanet, every submission, and the planted truth."""

    datanet: Datanet
    submissions: list[Submission]
    ground_truth: pd.DataFrame


def build_datanet(table: Table, behaviours: dict[str, str], noise_rate: float, seed: int) -> BuiltDatanet:
    """Build a Datanet from ``table`` with contributors behaving as ``behaviours`` says."""
    pool, test = split_test(table, TEST_FRACTION, seed)
    submissions, ground_truth = deal(table, pool, behaviours, noise_rate, seed)
    schema = Schema(n_features=len(table.feature_names), label_set=table.label_set)
    decisions = validate(submissions, schema)
    accepted = [s for s, d in zip(submissions, decisions) if d.accepted]
    if not accepted:
        raise DatanetError(f"validators accepted none of the {len(submissions)} submissions to {table.name!r}")
    class_index = {label: i for i, label in enumerate(table.label_set)}
    datanet = Datanet(
        name=table.name,
        version=dataset_version(decisions),
        schema=schema,
        feature_names=table.feature_names,
        image_shape=table.image_shape,
        contributors=tuple(behaviours),
        decisions=pd.DataFrame([vars(d) for d in decisions]),
        train_x=np.array([s.features for s in accepted], dtype=np.float32),
        train_y=np.array([class_index[s.label] for s in accepted], dtype=np.int64),
        train_ids=np.array([s.sample_id for s in accepted]),
        train_contributors=np.array([s.contributor for s in accepted]),
        test_x=table.features[test].astype(np.float32),
        test_y=np.array([class_index[label] for label in table.labels[test].tolist()], dtype=np.int64),
    )
    return BuiltDatanet(datanet, submissions, ground_truth)
