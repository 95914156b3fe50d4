"""Roll per-sample influence up to contributors, with redundant copies earning one sample's credit.

Sign convention: a positive score helped the model on the test set (lowered test loss).
A sample's credit is its mean score over the test set; a contributor's credit is the sum of
its accepted samples' credits, so it grows with both how much and how many samples helped.

TracIn and influence credit add up over copies: a sample submitted twice (under two identities,
perturbed just enough to pass an exact-duplicate check) earns about twice. The redundancy-aware
roll-up first groups near-copies and lets each group earn what one of its members earns
(:func:`shared_credit`): all of it to the member submitted first when the submission order is
known (a later copier earns nothing), else split equally.

Near-copies are found where the model sees them (:func:`similarity_clusters` on
:func:`last_layer_gradients`, restricted to the test gradients' span by
:func:`project_to_span`): samples of the same label whose loss gradients at the trained weights
point the same way in the directions the scores see. :func:`redundancy_clusters` joins samples by distance in input space
instead; noise of a few hundredths of a standard deviation per feature takes a copy out of its
radius.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.neighbors import NearestNeighbors
from torch import nn

from attribution.base import Inputs, forward

REDUNDANCY_RADIUS = 0.1
"""Default near-copy radius, as a fraction of the median nearest-neighbour distance. In the
default Datanets (standardized features) the closest pair of distinct samples sits at 0.29
(digits), 0.43 (breast_cancer) and 0.67 (wine) of that median, so 0.1 joins only samples far
closer than any two natural ones."""
REDUNDANCY_SIMILARITY = 0.996
"""Default near-copy threshold of :func:`similarity_clusters` on :func:`last_layer_gradients`
(within the test gradients' span). Distinct samples of the same label never reach it in the
bundled datasets: the highest similarity of a sample to another, over Datanet and training seeds
0-2, is 0.988 / 0.954 / 0.978 (digits / wine / breast_cancer) under the pipeline's logistic
regression and 0.995 / 0.985 / 0.995 under its MLP (``benchmarks/sybil_bench.py`` prints them).
Copies with 0.05 standard deviations of noise per feature stay above it: 99% on digits, all on
wine, 89% (logistic regression) and 97% (MLP) on breast_cancer."""


def sample_credit(scores: np.ndarray) -> np.ndarray:
    """``(n_train,)`` mean influence of each training sample over the test samples."""
    if scores.ndim != 2:
        raise ValueError(f"scores must be (n_train, n_test), got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"scores hold {np.count_nonzero(~np.isfinite(scores))} non-finite values")
    return scores.mean(axis=1)


def redundancy_clusters(features: np.ndarray, labels: np.ndarray, radius: float = REDUNDANCY_RADIUS) -> np.ndarray:
    """``(n,)`` cluster id per sample (``0..n_clusters-1``): samples of the same label within
    ``radius`` × the median nearest-neighbour distance of each other are joined (single linkage).

    ``features`` should be what the model sees (standardized): standardizing here, over rows
    that already hold near-copies, would blow a copy's noise on a constant feature up to the
    scale of real variation. The median is robust: it moves only when near-copies are the
    majority of the rows."""
    features, labels = np.asarray(features, dtype=np.float64), np.asarray(labels)
    if features.ndim != 2 or len(labels) != len(features):
        raise ValueError(f"features must be (n, d) with one label per row, got {features.shape} and {labels.shape}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if len(features) < 2:
        return np.arange(len(features))
    neighbours = NearestNeighbors(n_neighbors=2).fit(features)
    median = float(np.median(neighbours.kneighbors(features)[0][:, 1]))
    near = neighbours.radius_neighbors_graph(features, radius * median).tocoo()
    same = labels[near.row] == labels[near.col]
    graph = coo_matrix((near.data[same], (near.row[same], near.col[same])), shape=near.shape)
    return connected_components(graph, directed=False)[1]


def last_layer_gradients(model: nn.Module, x: Inputs, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's softmax cross-entropy gradient with respect to the model's output layer, in
    factored form: ``a (n, d_in [+ 1])``, the layer's input with a trailing 1 when it has a bias,
    and ``δ (n, n_classes)`` = softmax − onehot(y); the weight's gradient is ``δ aᵀ``, the bias's ``δ``.

    The model runs as it is (weights and train/eval mode untouched; ``no_grad``); its output must
    be the output of the last ``nn.Linear`` it calls. ``x`` is a tensor, tuple or mapping of
    tensors (:data:`~attribution.base.Inputs`). ``δ`` is computed in float64 from that
    layer's input, with the true class's entry as minus the sum of the others, so that the
    direction of a confidently fitted sample's gradient survives rounding."""
    calls: list[tuple[nn.Linear, torch.Tensor, torch.Tensor]] = []

    def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        calls.append((module, args[0].detach(), output))

    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            logits = forward(model, x)
    finally:
        for handle in handles:
            handle.remove()
    if not calls or calls[-1][2] is not logits or logits.ndim != 2:
        raise ValueError("last_layer_gradients needs a model whose output (n, n_classes) is the output of the last "
                         f"nn.Linear it calls; {type(model).__name__} called {len(calls)} nn.Linear layers and its "
                         "output is not the last one's")
    layer, inputs, _ = calls[-1]
    y = torch.as_tensor(y)
    if y.shape != (len(logits),) or y.dtype.is_floating_point or ((y < 0) | (y >= logits.shape[1])).any():
        raise ValueError(f"y must hold one class index in [0, {logits.shape[1]}) per sample; got shape "
                         f"{tuple(y.shape)}, dtype {y.dtype}")
    a = inputs.double()
    z = a @ layer.weight.detach().double().T  # (n, C)
    if layer.bias is not None:
        z += layer.bias.detach().double()
    delta = torch.softmax(z, dim=1)
    rows = torch.arange(len(y))
    delta[rows, y] = 0.0
    delta[rows, y] = -delta.sum(dim=1)
    if layer.bias is not None:
        a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], dim=1)
    return a.numpy(), delta.numpy()


def project_to_span(features: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each factor ``(n, d_k)`` of ``features`` in coordinates of an orthonormal basis of the row
    space of the matching factor ``(m, d_k)`` of ``reference``: ``(n, rank_k)``.

    With the test set's :func:`last_layer_gradients` as ``reference``, what is left is what the
    scores can see: a component of a training gradient orthogonal to every test gradient adds
    nothing to any score, so a copy that differs from its original only there (noise on a
    feature that is constant in the test set, which standardization blows up) stays a copy."""
    features, reference = list(features), list(reference)
    if len(features) != len(reference):
        raise ValueError(f"{len(features)} feature factors for {len(reference)} reference factors")
    out = []
    for f, r in zip(features, reference):
        f, r = np.asarray(f, dtype=np.float64), np.asarray(r, dtype=np.float64)
        if f.ndim != 2 or r.ndim != 2 or f.shape[1] != r.shape[1] or not len(r):
            raise ValueError(f"a feature factor {f.shape} and its reference {r.shape} must be 2-D with the same "
                             "number of columns and a reference row at least")
        _, singular, basis = np.linalg.svd(r, full_matrices=False)  # basis: (min(m, d), d) orthonormal rows
        rank = int((singular > singular[0] * max(r.shape) * np.finfo(np.float64).eps).sum())
        out.append(f @ basis[:rank].T)  # (n, rank)
    return out


def similarity_clusters(features: np.ndarray | Sequence[np.ndarray], labels: np.ndarray,
                        threshold: float = REDUNDANCY_SIMILARITY, block_size: int = 1024) -> np.ndarray:
    """``(n,)`` cluster id per sample (``0..n_clusters-1``): samples of the same label whose
    feature vectors have cosine similarity ``>= threshold`` are joined (single linkage).

    ``features`` is one ``(n, d)`` array or factors ``[(n, d_1), (n, d_2), ...]`` of a vector per
    sample that is their outer product (as :func:`last_layer_gradients` returns; the cosine of an
    outer product is the product of the factors' cosines, so it is never formed). A sample whose
    vector is zero is similar to nothing. Similarities are computed ``block_size`` rows at a time
    (memory ``block_size × n``)."""
    factors = [features] if isinstance(features, np.ndarray) else list(features)
    labels = np.asarray(labels)
    factors = [np.asarray(f, dtype=np.float64) for f in factors]
    if not factors or any(f.ndim != 2 or len(f) != len(labels) for f in factors):
        raise ValueError(f"features must be (n, d) arrays with one row per label ({len(labels)}), got shapes "
                         f"{[f.shape for f in factors]}")
    if not all(np.isfinite(f).all() for f in factors):
        raise ValueError("features hold non-finite values")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    units = []
    for f in factors:
        norms = np.linalg.norm(f, axis=1, keepdims=True)
        units.append(np.divide(f, norms, out=np.zeros_like(f), where=norms > 0))
    n, rows, cols = len(labels), [], []
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        similarity = np.ones((stop - start, n))
        for u in units:
            similarity *= u[start:stop] @ u.T  # (block, n)
        i, j = np.nonzero((similarity >= threshold) & (labels[start:stop, None] == labels[None, :]))
        later = j > i + start
        rows.append(i[later] + start)
        cols.append(j[later])
    row, col = np.concatenate(rows, dtype=np.int64), np.concatenate(cols, dtype=np.int64)
    graph = coo_matrix((np.ones(len(row)), (row, col)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def content_clusters(hashes: Sequence[str]) -> np.ndarray:
    """``(n,)`` cluster ids (integers >= 0) joining the samples of equal content hash: verbatim
    copies, for :func:`shared_credit` and :func:`contributor_credit`."""
    return pd.factorize(pd.Series(list(hashes), dtype=object))[0].astype(np.int64)


def earliest_members(clusters: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``(n,)`` for each sample, the index of its cluster's earliest-submitted member by ``order``
    (``(n,)`` distinct integer submission ranks: earlier = smaller)."""
    clusters, order = _cluster_ids(clusters), np.asarray(order)
    if order.shape != clusters.shape or (len(order) and order.dtype.kind not in "iu"):
        raise ValueError(f"order must hold one integer rank per sample ({len(clusters)}), got shape {order.shape}, "
                         f"dtype {order.dtype}")
    if len(np.unique(order)) != len(order):
        raise ValueError(f"order must rank every sample differently; {len(order) - len(np.unique(order))} "
                         "ranks repeat, so the earliest member of a cluster is ambiguous")
    by_order = np.argsort(order, kind="stable")
    ids, first = np.unique(clusters[by_order], return_index=True)
    earliest = np.zeros(ids.max() + 1 if len(ids) else 0, dtype=np.int64)
    earliest[ids] = by_order[first]
    return earliest[clusters]


def _cluster_ids(clusters: np.ndarray) -> np.ndarray:
    """``clusters`` as an array, or ``ValueError`` unless they are integers >= 0."""
    clusters = np.asarray(clusters)
    if len(clusters) and (clusters.dtype.kind not in "iu" or clusters.min() < 0):
        raise ValueError(f"cluster ids must be integers >= 0, got dtype {clusters.dtype}"
                         + (f", min {clusters.min()}" if clusters.dtype.kind in "iuf" else ""))
    return clusters


def shared_credit(credit: np.ndarray, clusters: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """``(n,)`` each sample's part of its cluster's credit, the mean of its members' credits (a
    cluster earns what one member does; a singleton keeps its credit).

    With ``order`` (``(n,)`` distinct integers, the submission rank of each sample: earlier =
    smaller, e.g. the ledger sequence number of its contribution), the earliest-submitted member
    (:func:`earliest_members`) takes all of it and the others 0; without, the members split it equally."""
    credit, clusters = np.asarray(credit, dtype=np.float64), np.asarray(clusters)
    if credit.shape != clusters.shape:
        raise ValueError(f"{len(clusters)} cluster ids for {len(credit)} credits")
    clusters = _cluster_ids(clusters)
    size = np.bincount(clusters)[clusters]
    mean = np.bincount(clusters, credit)[clusters] / size
    if order is None:
        return mean / size
    earliest = earliest_members(clusters, order) == np.arange(len(credit))
    return np.where(earliest, mean, 0.0)


def contributor_credit(scores: np.ndarray, contributors: Sequence[str], all_contributors: Sequence[str],
                       clusters: np.ndarray | None = None, order: np.ndarray | None = None) -> pd.Series:
    """Sum of sample credit per contributor, indexed by ``all_contributors`` (0 for none accepted);
    with ``clusters`` (:func:`similarity_clusters`), the sum of :func:`shared_credit`, which gives
    a cluster's credit to its earliest member by ``order`` (submission rank per training row)."""
    if len(contributors) != scores.shape[0]:
        raise ValueError(f"{len(contributors)} contributor ids for {scores.shape[0]} training rows")
    if order is not None and clusters is None:
        raise ValueError("order ranks the members of redundancy clusters; pass clusters with it")
    credit = sample_credit(scores)
    if clusters is not None:
        credit = shared_credit(credit, clusters, order)
    summed = pd.Series(credit).groupby(np.asarray(contributors)).sum()
    return summed.reindex(list(all_contributors), fill_value=0.0).rename("attribution")


def contributor_credit_per_test(scores: np.ndarray, contributors: Sequence[str], all_contributors: Sequence[str],
                                clusters: np.ndarray | None = None, order: np.ndarray | None = None) -> np.ndarray:
    """``(len(all_contributors), n_test)``: column ``j`` is :func:`contributor_credit` of test sample ``j`` alone."""
    scores = np.asarray(scores, dtype=np.float64)
    columns = [contributor_credit(scores[:, [j]], contributors, all_contributors, clusters, order).to_numpy()
               for j in range(scores.shape[1])]
    return np.stack(columns, axis=1) if columns else np.zeros((len(all_contributors), 0))
