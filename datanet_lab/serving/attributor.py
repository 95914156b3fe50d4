"""Query-time attribution: each served input's prediction, its training-data attribution by the
run's method (computed by the method that declares gradient factors and computes exactly its
scores, whose registry name :attr:`QueryAttributor.method` records), and that attribution rolled
up to contributors.

Stages (:class:`QueryAttributor`):

1. ``from_run``: read the run's Datanet, checkpoints, redundancy clusters and submission order
   through its step manifests (never retraining), then compute what no query changes: every
   checkpoint's training gradient factors, weighted and laid out for one product
   (:class:`TrainGradients`), and the roll-up as a matrix (:func:`rollup_matrix`);
2. per micro-batch ``x`` ``(n, n_features)``: :meth:`~QueryAttributor.predict` (one forward),
   :meth:`~QueryAttributor.query_factors` (one forward and backward per checkpoint),
   :meth:`~QueryAttributor.score` (the products with the training factors) and
   :meth:`~QueryAttributor.roll_up` (one matrix product); :meth:`~QueryAttributor.attribute`
   runs the four.

Sign convention: a served input's true label is unknown, so its loss is taken at the class the
model answered. ``scores[i, j] > 0``: a training step on sample ``i`` lowers that loss, i.e.
training sample ``i`` raised the model's confidence in what it answered for input ``j``. With
``labels=`` the loss is taken at those classes, the convention of the run's
``attribution/scores.npy`` (positive = lowered the test loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attribution import METHODS, AttributionTask, make_attributor, shared_credit
from attribution.fast_tracin import GradientFactors
from attribution.registry import capable
from datanet_lab.pipeline.tabular import attribute_step
from datanet_lab.pipeline.tabular.build_step import datanet
from datanet_lab.pipeline.run import Run
from datanet_lab.pipeline.tabular.train_step import train_model
from datanet_lab.serving.requests import RequestError, check_batch
from datanet_lab.serving.runs import ServingError, served_run

QUERY_TIME = "gradient_factors"
"""The :class:`~attribution.base.Capabilities` field query-time attribution needs: training factors
computed once, each query scored against them (:class:`TrainGradients`)."""


@dataclass(frozen=True)
class QueryResult:
    """What :meth:`QueryAttributor.attribute` answers for a micro-batch of ``n`` inputs.

    ``predictions`` ``(n,)`` int64 class indices the trained model answers; ``probabilities``
    ``(n, n_classes)`` float64 its softmax; ``labels`` ``(n,)`` int64 the classes whose loss was
    attributed (``predictions`` unless given); ``scores`` ``(n_train, n)`` float64, ``[i, j]`` =
    training sample ``i`` on input ``j``, positive = lowered input ``j``'s loss at ``labels[j]``;
    ``contributor_credit`` ``(n_contributors, n)`` float64, ``[c, j]`` = contributor ``c``'s
    redundancy-aware credit for input ``j`` (rows in :attr:`QueryAttributor.contributors` order).
    """

    predictions: np.ndarray
    probabilities: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    contributor_credit: np.ndarray


@dataclass
class _GramLayer:
    """One Gram layer's training factors over every checkpoint: ``inputs`` one ``(n_train, d_in)``
    per checkpoint, or a single one when every checkpoint gives the same; ``deltas``
    ``(n_train, T·d_out)``, checkpoint ``t``'s ``w_t Δ_t`` in columns ``t·d_out`` to ``(t+1)·d_out``."""

    inputs: list[torch.Tensor]
    deltas: torch.Tensor


class TrainGradients:
    """Every checkpoint's training gradient factors (:class:`~attribution.fast_tracin.GradientFactors`,
    ``T`` checkpoints, ``n_train`` rows each) weighted by ``weights`` ``(T,)``, laid out so that
    :meth:`dot` costs a few matrix products per batch of queries.

    A Gram layer contributes ``Σ_t w_t (Δ_t Δ'_tᵀ) ⊙ (A_t A'_tᵀ)``. When its input is the same at
    every checkpoint (the first Linear, after the fixed standardization) for training rows and
    queries alike, this is ``(A A'ᵀ) ⊙ ([w_t Δ_t]_t [Δ'_t]_tᵀ)``: one product per factor instead
    of two per checkpoint. Other parameters' flattened gradients are concatenated over checkpoints.
    """

    def __init__(self, factors: Sequence[GradientFactors], weights: Sequence[float]) -> None:
        if not factors or len(factors) != len(weights):
            raise ValueError(f"{len(factors)} checkpoints' factors for {len(weights)} weights; expected as many, >= 1")
        self.weights = [float(w) for w in weights]
        self.n_train = len(factors[0])
        self.dtype = factors[0].dtype
        self._layers = []
        for layer in range(len(factors[0].linear)):
            inputs = [f.linear[layer][0] for f in factors]
            shared = all(torch.equal(inputs[0], a) for a in inputs[1:])
            deltas = torch.cat([w * f.linear[layer][1] for f, w in zip(factors, self.weights)], dim=1)
            self._layers.append(_GramLayer(inputs[:1] if shared else inputs, deltas))
        has_other = factors[0].other is not None
        self._other = torch.cat([w * f.other for f, w in zip(factors, self.weights)], dim=1) if has_other else None

    def dot(self, queries: Sequence[GradientFactors]) -> torch.Tensor:
        """``(n_train, n)`` ``Σ_t w_t ∇ℓ(train_i; θ_t) · ∇ℓ(query_j; θ_t)`` from the queries'
        factors at each checkpoint (``queries[t]`` at checkpoint ``t``, ``n`` rows each)."""
        if len(queries) != len(self.weights):
            raise ValueError(f"{len(queries)} checkpoints' query factors, expected {len(self.weights)}")
        out = torch.zeros(self.n_train, len(queries[0]), dtype=self.dtype)
        for index, layer in enumerate(self._layers):
            inputs = [q.linear[index][0] for q in queries]
            deltas = [q.linear[index][1] for q in queries]
            if len(layer.inputs) == 1 and all(torch.equal(inputs[0], a) for a in inputs[1:]):
                out.addcmul_(layer.deltas @ torch.cat(deltas, dim=1).T, layer.inputs[0] @ inputs[0].T)
                continue
            width = deltas[0].shape[1]
            for t, (a, d) in enumerate(zip(inputs, deltas)):
                train_inputs = layer.inputs[t if len(layer.inputs) > 1 else 0]
                out.addcmul_(layer.deltas[:, t * width : (t + 1) * width] @ d.T, train_inputs @ a.T)  # (n_train, n)
        if self._other is not None:
            out.addmm_(self._other, torch.cat([q.other for q in queries], dim=1).T)
        return out


def rollup_matrix(sample_contributors: Sequence[str], contributors: Sequence[str], clusters: np.ndarray,
                  order: np.ndarray) -> np.ndarray:
    """``(n_contributors, n_train)`` float64 ``R`` with ``R @ s`` = the redundancy-aware
    contributor credit of one column ``s`` ``(n_train,)`` of scores, as
    :func:`attribution.contributor_credit` computes it (a cluster's mean score, all of it to its
    earliest member by ``order``, summed per contributor; rows in ``contributors`` order).

    Column ``i`` holds ``1 / |cluster(i)|`` in the row of the contributor of ``cluster(i)``'s
    earliest member (found by :func:`attribution.shared_credit`), zeros elsewhere."""
    sample_contributors, clusters = np.asarray(sample_contributors), np.asarray(clusters)
    row = {c: k for k, c in enumerate(contributors)}
    unknown = sorted(set(sample_contributors.tolist()) - set(row))
    if unknown:
        raise ValueError(f"training rows of contributors {unknown} outside the contributor list {list(contributors)}")
    earliest = np.flatnonzero(shared_credit(np.ones(len(clusters)), clusters, order))  # one member per cluster
    first = np.empty(clusters.max() + 1 if len(clusters) else 0, dtype=np.int64)
    first[clusters[earliest]] = earliest
    out = np.zeros((len(contributors), len(clusters)))
    owner = np.array([row[c] for c in sample_contributors[first[clusters]]], dtype=np.int64)
    out[owner, np.arange(len(clusters))] = 1.0 / np.bincount(clusters)[clusters]
    return out


class QueryAttributor:
    """Per-input attribution of a trained model by a method with gradient factors
    (:data:`QUERY_TIME`), or by the method that computes exactly its scores with them
    (:func:`attribution.registry.capable`).

    Args:
        task: the trained model, its training data and checkpoints (the model's own weights are
            left alone; predictions use the last checkpoint's).
        method: the run's attribution method, a registry name; one that no method with gradient
            factors computes raises :class:`ServingError`. :attr:`method` is the registry name of
            the method that computes the credit (e.g. ``tracin_fast`` for ``tracin_captum``).
        sample_contributors: ``(n_train,)`` the contributor of each training row.
        contributors: every contributor, the rows of ``contributor_credit``.
        clusters: ``(n_train,)`` redundancy cluster per training row.
        order: ``(n_train,)`` submission rank per training row (earlier = smaller).
        seed: seeds the method (as the run's ``seed`` seeded its attribute step).

    Not thread-safe: the gradient engine loads each checkpoint into one model in turn; serve
    one micro-batch at a time per attributor.
    """

    def __init__(self, task: AttributionTask, method: str, sample_contributors: Sequence[str],
                 contributors: Sequence[str], clusters: np.ndarray, order: np.ndarray, seed: int = 0) -> None:
        engine = capable(method, QUERY_TIME) if method in METHODS else None
        if engine is None:
            raise ServingError(f"attribution method {method!r} has no query-time attribution; "
                               f"supported: {sorted(m for m in METHODS if capable(m, QUERY_TIME))}")
        self.contributors = tuple(contributors)
        final = task.own_copy()
        final.load_final()
        self._model = final.model.eval()
        self.n_features = int(task.train_x.shape[1])
        self._engine = make_attributor(engine, seed).fit(task)
        self.method = self._engine.name
        weights = self._engine.checkpoint_weights
        self._train = TrainGradients([self._engine.factors(task.train_x, task.train_y, t) for t in range(len(weights))],
                                     weights)
        # torch's matmul follows torch.set_num_threads; numpy's BLAS spawns its own threads and
        # thrashes on a loaded machine (50x slower for one 512-input batch on 2 busy cores).
        self._rollup = torch.from_numpy(rollup_matrix(sample_contributors, self.contributors, clusters, order))

    @classmethod
    def from_run(cls, run: str | Path | Run) -> QueryAttributor:
        """The attributor of a run directory (or :class:`Run`) whose build, train and attribute
        steps are done: its Datanet, checkpoints, the clusters of ``attribution/sample_credit.csv``
        and the ledger's submission order, read through the step manifests.

        Raises:
            ServingError: a step not run (named), an unsupported ``attribution_method``, or
                ``sample_credit.csv`` rows that are not the Datanet's training rows.
            ManifestError: outputs altered or made from other parameters.
        """
        run = served_run(run)
        dn, trained = datanet(run), train_model(run)
        _, samples, _ = attribute_step.read_scores(run)
        where = run.directory / "attribution" / "sample_credit.csv"
        for column, expected in (("sample_id", dn.train_ids), ("contributor", dn.train_contributors)):
            if samples[column].astype(str).tolist() != [str(v) for v in expected]:
                raise ServingError(f"{where}: column {column!r} does not list the Datanet's training rows in order")
        return cls(attribute_step.training_task(dn, trained), run.params["attribution_method"], dn.train_contributors, dn.contributors,
                   samples["cluster"].to_numpy(), attribute_step.submission_order(run, dn), run.params["seed"])

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(n,)`` int64 predicted classes and ``(n, n_classes)`` float64 probabilities of ``x``
        ``(n, n_features)`` at the trained model."""
        with torch.no_grad():
            probabilities = torch.softmax(self._model(self._tensor(x)).double(), dim=1).numpy()
        return probabilities.argmax(axis=1), probabilities

    def query_factors(self, x: np.ndarray, labels: np.ndarray) -> list[GradientFactors]:
        """Per checkpoint, the gradient factors of the loss of ``x`` ``(n, n_features)`` at
        ``labels`` ``(n,)`` class indices (one forward and backward each)."""
        x, y = self._tensor(x), torch.from_numpy(np.asarray(labels, dtype=np.int64))
        return [self._engine.factors(x, y, t, test=True) for t in range(len(self._train.weights))]

    def score(self, queries: Sequence[GradientFactors]) -> np.ndarray:
        """``(n_train, n)`` float64 scores of the queries' factors (:meth:`query_factors`)."""
        return self._train.dot(queries).double().numpy()

    def roll_up(self, scores: np.ndarray) -> np.ndarray:
        """``(n_contributors, n)`` redundancy-aware contributor credit of each column of ``scores``."""
        return (self._rollup @ torch.from_numpy(np.asarray(scores, dtype=np.float64))).numpy()

    def attribute(self, x: np.ndarray, labels: np.ndarray | None = None) -> QueryResult:
        """Predict ``x`` ``(n, n_features)`` and attribute each input's loss at its predicted
        class, or at ``labels`` ``(n,)`` class indices when given (see the module docstring for
        the sign).

        Raises:
            RequestError (a ``ValueError``): ``x`` of the wrong shape or with NaN/inf, an input
                whose output or credit is not finite in the float32 model, or ``labels`` not one
                class index per input.
        """
        x = check_batch(x, self.n_features)
        predictions, probabilities = self.predict(x)
        labels = predictions if labels is None else self._checked_labels(labels, len(x), probabilities.shape[1])
        scores = self.score(self.query_factors(x, labels))
        credit = self.roll_up(scores)
        finite = np.isfinite(probabilities).all(axis=1) & np.isfinite(scores).all(axis=0) & np.isfinite(credit).all(axis=0)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            field = int(np.abs(x[row]).argmax())
            raise RequestError(f"row {row}: the float32 model's output or credit is not finite for this input (a value "
                               f"overflows once standardized; largest is field {field} = {x[row, field]:g})")
        return QueryResult(predictions, probabilities, labels, scores, credit)

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=next(self._model.parameters()).dtype)

    @staticmethod
    def _checked_labels(labels: np.ndarray, n: int, n_classes: int) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.shape != (n,) or labels.dtype.kind not in "iu" or (n and (labels.min() < 0 or labels.max() >= n_classes)):
            raise RequestError(f"labels must hold one class index in [0, {n_classes}) per input ({n}); got shape "
                               f"{labels.shape}, dtype {labels.dtype}")
        return labels.astype(np.int64)
