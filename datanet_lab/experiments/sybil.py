"""The sybil experiment: does submitting near-copies of one's rows under extra identities pay, and
does copying someone else's rows?

One contributor's accepted rows are submitted again, after everyone else, under ``k - 1`` extra
identities (:func:`with_copies`): every row with ``N(0, noise²)`` added to each feature that varies
in the accepted set, ``noise`` in standard deviations of that feature (new bytes, so the
exact-duplicate check accepts them; a constant feature stays constant, since the model's
standardization would turn noise there into a feature of its own rather than a near-copy).

Two payout methods score the data with and without the copies (:func:`score`): TracIn over the
SGD checkpoints of the model the pipeline trains (``tracin``, what payouts use), and exact
influence functions on the converged L2-regularized logistic regression (``influence``), on
features standardized by the accepted set without the copies. Three roll-ups turn the scores into
contributor credit: ``summed`` (none), ``radius`` (:func:`attribution.redundancy_clusters` in the
standardized input space, credit split equally in a cluster) and ``gradient``
(:func:`attribution.similarity_clusters` on :func:`attribution.last_layer_gradients` at the final
weights, within the test gradients' span, the earliest-submitted member keeps a cluster's credit).

Figures (:func:`study`): the sybil gain, the payout share of the contributor and its identities
with the copies over its share without them (payout shares are positive credit over the total
positive credit, as the ledger's split pays); the copier ratio, what the first copy identity earns
over what the contributor earns (read as a copier's take of an honest contributor's credit); the
fraction of copies that escape their original's cluster; and the copies' real worth by retraining
the converged model, in units of what the contributor's rows are worth (``L`` the mean test loss,
``D`` the accepted set): ``retrain_value = (L(D) - L(D + copies)) / (L(D - rows) - L(D))``, and
``beyond_duplicate``, the same with ``L(D + exact duplicates)`` in place of ``L(D)``. Exact
duplicates lower the test loss too (they weigh those rows more against the L2 penalty, which is
no new information), so ``beyond_duplicate`` is what the noise adds: the part of a copy's worth
that credit could fairly pay.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import attribution
from datanet import Datanet
from datanet.convex import fit_logreg, judge
from datanet.models import standardization
from datanet.training import TrainConfig, load_checkpoint, train
from datanet.validation import content_hash
from datanet_lab.experiments.problem import Problem, task

COPY_NOISE = (0.01, 0.02, 0.05, 0.1, 0.2)
"""Copy noise levels of the study, in standard deviations per standardized feature."""
IDENTITIES = (2, 3)
"""Identities ``k`` submitting the same rows (the contributor and ``k - 1`` sybils)."""
ROLLUPS = ("summed", "radius", "gradient")
METHODS = ("tracin", "influence")


@dataclasses.dataclass(frozen=True)
class Scored:
    """One payout method's view of a Datanet: ``scores (n_train, n_test)`` (positive = helped),
    ``gradients`` (:func:`attribution.last_layer_gradients` at the final weights, within the
    test gradients' span: :func:`attribution.project_to_span`) and ``inputs``,
    the standardized features ``(n_train, n_features)`` the model sees."""

    scores: np.ndarray
    gradients: list[np.ndarray]
    inputs: np.ndarray


def with_copies(dn: Datanet, contributor: str, k: int, noise: float, seed: int = 0) -> Datanet:
    """``dn`` with ``contributor``'s accepted rows appended ``k - 1`` times, under identities
    ``sybil1..sybil{k-1}`` (after every other row, as later submissions), each feature that varies
    in ``dn.train_x`` plus ``N(0, (noise × its std)²)``; their decisions are accepted."""
    rows = np.flatnonzero(dn.train_contributors == contributor)
    if k < 1 or not noise > 0 or not len(rows):
        raise ValueError(f"with_copies needs k >= 1, noise > 0 and a contributor with accepted rows; got k={k}, "
                         f"noise={noise}, contributor {contributor!r} with {len(rows)} accepted rows")
    _, std = standardization(dn.train_x)
    varies = dn.train_x.std(axis=0) > 0
    rng = np.random.default_rng(seed)
    x, y = [dn.train_x], [dn.train_y]
    ids, owners, decisions = [dn.train_ids], [dn.train_contributors], [dn.decisions]
    for j in range(1, k):
        identity = f"sybil{j}"
        copy = dn.train_x[rows] + (rng.normal(0.0, noise, (len(rows), len(std))) * std * varies).astype(np.float32)
        sample_ids = np.array([f"{identity}-{i:05d}" for i in range(len(rows))])
        labels = [dn.schema.label_set[c] for c in dn.train_y[rows]]
        x.append(copy)
        y.append(dn.train_y[rows])
        ids.append(sample_ids)
        owners.append(np.full(len(rows), identity))
        decisions.append(pd.DataFrame({"sample_id": sample_ids, "contributor": identity, "accepted": True,
                                       "reason": "accepted",
                                       "content_hash": [content_hash(f.tolist(), lab) for f, lab in zip(copy, labels)]}))
    return dataclasses.replace(
        dn, contributors=dn.contributors + tuple(f"sybil{j}" for j in range(1, k)),
        decisions=pd.concat(decisions, ignore_index=True), train_x=np.concatenate(x), train_y=np.concatenate(y),
        train_ids=np.concatenate(ids), train_contributors=np.concatenate(owners))


def score(dn: Datanet, method: str, config: TrainConfig, l2: float, directory: Path,
          standardize_by: Datanet | None = None) -> Scored:
    """``method`` ``"tracin"``: train ``config`` as the pipeline does (checkpoints in
    ``directory``) and score with TracIn over every checkpoint. ``"influence"``: exact influence
    functions on the converged logistic regression (L2 weight ``l2``) on features standardized by
    ``standardize_by`` (default ``dn``) accepted rows."""
    train_x, train_y = torch.from_numpy(dn.train_x), torch.from_numpy(dn.train_y)
    test_x, test_y = torch.from_numpy(dn.test_x), torch.from_numpy(dn.test_y)
    if method == "tracin":
        trained = train(dn, config, directory)
        gradients = _model_view(trained.model, dn, train_x, train_y)
        with torch.no_grad():
            inputs = trained.model[0](train_x).double().numpy()  # every Datanet model starts with its Standardize layer
        target = attribution.AttributionTask(trained.model, train_x, train_y, trained.checkpoints, load_checkpoint)
        return Scored(attribution.FastTracIn().fit(target).scores(test_x, test_y), gradients, inputs)
    if method == "influence":
        p = _standardized(dn, standardize_by or dn, l2)
        target = task(p, directory)
        x, y = torch.from_numpy(p.train_x.astype(np.float32)), torch.from_numpy(p.train_y)
        gradients = _model_view(target.model, dn, x, y, torch.from_numpy(p.test_x.astype(np.float32)))
        scores = attribution.InfluenceFunction("exact").fit(target).scores(
            torch.from_numpy(p.test_x.astype(np.float32)), torch.from_numpy(p.test_y))
        return Scored(scores, gradients, p.train_x)
    raise ValueError(f"unknown method {method!r}; expected one of {list(METHODS)}")


def credit(dn: Datanet, scored: Scored, rollup: str) -> pd.Series:
    """Contributor credit (indexed by ``dn.contributors``) under ``rollup``; rows rank in
    submission order (a Datanet's rows are in the order they were submitted)."""
    if rollup == "summed":
        return attribution.contributor_credit(scored.scores, dn.train_contributors, dn.contributors)
    if rollup == "radius":
        clusters = attribution.redundancy_clusters(scored.inputs, dn.train_y)
        return attribution.contributor_credit(scored.scores, dn.train_contributors, dn.contributors, clusters)
    if rollup == "gradient":
        clusters = attribution.similarity_clusters(scored.gradients, dn.train_y)
        return attribution.contributor_credit(scored.scores, dn.train_contributors, dn.contributors, clusters,
                                              order=np.arange(len(dn.train_y)))
    raise ValueError(f"unknown rollup {rollup!r}; expected one of {list(ROLLUPS)}")


def payout_share(credit: pd.Series) -> pd.Series:
    """Each contributor's positive credit over the total positive credit (the ledger's split)."""
    positive = credit.clip(lower=0.0)
    if not positive.sum() > 0:
        raise ValueError("no contributor has positive credit: there is no payout share to compare")
    return positive / positive.sum()


def retrained_loss(dn: Datanet, rows: np.ndarray, l2: float, standardize_by: Datanet) -> float:
    """Mean test loss of the converged logistic regression trained on ``dn``'s rows ``rows``."""
    p = _standardized(dn, standardize_by, l2)
    fit = fit_logreg(p.train_x[rows], p.train_y[rows], p.n_classes, l2)
    return float(judge(fit.logits(p.test_x), p.test_y).loss.mean())


def study(dn: Datanet, contributor: str, config: TrainConfig, l2: float, directory: Path,
          noises: Sequence[float] = COPY_NOISE, identities: Sequence[int] = IDENTITIES,
          methods: Sequence[str] = METHODS, seed: int = 0) -> pd.DataFrame:
    """One row per ``(method, noise, k)``: ``gain_<rollup>`` for each of :data:`ROLLUPS`,
    ``copier_<rollup>`` (first copy identity's credit over ``contributor``'s, for ``radius`` and
    ``gradient``), ``escaped`` (fraction of copies not in their original's ``gradient`` cluster),
    ``retrain_value`` and ``beyond_duplicate`` (retraining; the same for both methods).
    ``directory`` receives checkpoints. A copier ratio is NaN when ``contributor``'s credit is not
    positive; the retraining figures are NaN when its rows do not lower the retrained test loss
    (nothing to measure the copies' worth against).

    Raises:
        ValueError: ``contributor`` has no accepted rows, or no positive payout share without the
            copies under some method and roll-up (the gain, a ratio to that share, is undefined);
            raised before any copy is scored.
    """
    rows = np.flatnonzero(dn.train_contributors == contributor)
    if not len(rows):
        raise ValueError(f"contributor {contributor!r} has no accepted rows in {dn.name!r}")
    n = len(dn.train_y)
    everyone = np.arange(n)
    alone = retrained_loss(dn, everyone, l2, dn)
    worth = retrained_loss(dn, everyone[dn.train_contributors != contributor], l2, dn) - alone
    before = {m: score(dn, m, config, l2, directory / m / "base") for m in methods}
    shares = {(m, r): payout_share(credit(dn, before[m], r))[contributor] for m in methods for r in ROLLUPS}
    _check_shares(contributor, shares)
    table = []
    for noise in noises:
        for k in identities:
            copied = with_copies(dn, contributor, k, noise, seed)
            sybils = [f"sybil{j}" for j in range(1, k)]
            originals = np.tile(rows, k - 1)  # the original of each copy row
            copies = alone - retrained_loss(copied, np.arange(len(copied.train_y)), l2, dn)
            duplicates = alone - retrained_loss(dn, np.concatenate([everyone, originals]), l2, dn)
            value = {"retrain_value": copies / worth, "beyond_duplicate": (copies - duplicates) / worth} if worth > 0 \
                else {"retrain_value": np.nan, "beyond_duplicate": np.nan}
            for m in methods:
                after = score(copied, m, config, l2, directory / m / f"{noise}-{k}", standardize_by=dn)
                row = {"method": m, "noise": noise, "k": k}
                for r in ROLLUPS:
                    got = credit(copied, after, r)
                    row[f"gain_{r}"] = float(payout_share(got)[[contributor, *sybils]].sum() / shares[m, r])
                    if r != "summed" and k > 1:
                        row[f"copier_{r}"] = float(got["sybil1"] / got[contributor]) if got[contributor] > 0 else np.nan
                clusters = attribution.similarity_clusters(after.gradients, copied.train_y)
                row["escaped"] = float(np.mean(clusters[n:] != clusters[originals])) if k > 1 else 0.0
                row.update(value)
                table.append(row)
    return pd.DataFrame(table)


def _check_shares(contributor: str, shares: dict[tuple[str, str], float]) -> None:
    """Raise :class:`ValueError` naming each ``(method, roll-up)`` under which ``contributor``'s
    payout share without the copies, the sybil gain's denominator, is not positive."""
    undefined = [f"{m} with the {r} roll-up" for (m, r), share in shares.items() if not share > 0]
    if undefined:
        raise ValueError(f"the sybil gain of {contributor!r} is undefined for {', '.join(undefined)}: "
                         f"{contributor!r} has no positive credit without the copies, so there is no share to compare with")


def natural_similarity(dn: Datanet, config: TrainConfig, directory: Path) -> np.ndarray:
    """``(n_train,)`` each accepted sample's highest cosine similarity of last-layer loss
    gradients (within the test gradients' span) to another sample of its label, under
    ``config``'s model trained on ``dn`` (what
    :data:`attribution.REDUNDANCY_SIMILARITY` must stay above for distinct samples)."""
    trained = train(dn, config, directory)
    a, delta = _model_view(trained.model, dn, torch.from_numpy(dn.train_x), torch.from_numpy(dn.train_y))
    a, delta = (f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), np.finfo(float).tiny) for f in (a, delta))
    similarity = (a @ a.T) * (delta @ delta.T)  # (n, n)
    similarity[dn.train_y[:, None] != dn.train_y[None, :]] = -np.inf
    np.fill_diagonal(similarity, -np.inf)
    return similarity.max(axis=1)


def _model_view(model: torch.nn.Module, dn: Datanet, x: torch.Tensor, y: torch.Tensor,
                test_x: torch.Tensor | None = None) -> list[np.ndarray]:
    """Last-layer loss gradients of ``(x, y)`` within the span of the test set's (``test_x``,
    default ``dn.test_x``), as the pipeline's roll-up sees them."""
    test_x = torch.from_numpy(dn.test_x) if test_x is None else test_x
    test = attribution.last_layer_gradients(model, test_x, torch.from_numpy(dn.test_y))
    return attribution.project_to_span(attribution.last_layer_gradients(model, x, y), test)


def _standardized(dn: Datanet, by: Datanet, l2: float) -> Problem:
    mean, std = standardization(by.train_x)
    index = {c: i for i, c in enumerate(dn.contributors)}
    groups = np.array([index[c] for c in dn.train_contributors])
    no = np.zeros(len(dn.contributors), dtype=bool)
    return Problem((dn.train_x - mean) / std, dn.train_y, (dn.test_x - mean) / std, dn.test_y, dn.n_classes,
                   groups, dn.contributors, no, np.zeros(len(dn.train_y), dtype=bool), l2)
