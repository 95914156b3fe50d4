"""A Datanet that grows in rounds on one ledger: each round adds contributions, retrains,
re-attributes and pays its own epoch, optionally weighting credit by contributor reputation.

The plan (:data:`CAST`; batches of ``batch_rows`` rows cut in order from one seeded shuffle of
the source's pool, so no two batches share a row):

* rounds 1-2: c00-c02 honest; c03 the *upgrader*, whose labels are sloppy (flipped at
  ``noise_rate``); c04 noisy (``noise_rate``); c05 a duplicate, who resubmits another
  contributor's batch of the round byte for byte (validators reject it); c06 the *sleeper*,
  honest so far. Each submits one batch per round.
* round 2: c07 joins (honest).
* round 3 (:data:`TURN_ROUND`) and later: the upgrader submits a clean batch twice as large
  in round 3, and it *supersedes* its rounds 1-2 rows, which leave the training set of round 3's
  version and every later one (the version's ledger entry lists them); clean batches after that.
  The sleeper flips labels at ``poison_rate`` from round 3 on. Everyone else keeps going.

Each round ``r``, in order: the round's submissions are validated against everything submitted
before (an exact copy of an earlier accepted sample is rejected); one ledger batch records new
actors' stakes (:data:`~datanet_lab.params.STAKE_UNITS` each, once, when they join), every
contribution and validation decision, and the ``dataset_version`` entry naming its ``parent``;
the model is retrained (:func:`datanet.training.train`, checkpoints in
``rounds/round-<r>/checkpoints/``) and re-attributed (``attribution_method``, roll-up
:func:`~datanet_lab.pipeline.tabular.attribute_step.roll_up`), each run recorded; ``on_round`` is called;
payout epoch ``r`` pays ``reward_pool`` (:func:`ledger.plan_epoch`: slashes against what is left
of each stake, on the round's rejections and the contributor's net credit; with ``reputation``,
the split is over credit × :func:`ledger.reputation.reputation_weight`,
:func:`ledger.reputation.reputation_plan`); the signed head is saved as
``rounds/round-<r>/head.json`` and, from round 2, ``consistency.json`` proves it extends the
previous round's head (checked on the spot, the log key pinned).

Each round runs the tabular run's steps on the same engine and record builders
(:func:`round_steps`: record, train, attribute, pay; :func:`~datanet_lab.pipeline.engine.run_step`),
each with its manifest in ``manifests/round-<r>-<step>.json``: a run stopped anywhere finishes when
called again, and a finished one is read back.

A contributor's reputation history gets one record per round from its join: the round's accepted
and rejected submissions, the units slashed in the round's epoch, and the realised influence (sum
and sum of magnitudes of shared credit) of the batch it submitted that round, as that round's
attribution measured it. Every one of these numbers is in the ledger (validation, slash and
``attribution_run`` entries), so the weights can be recomputed from it.
"""

from __future__ import annotations

import json
import time
from functools import partial
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import attribution
import ledger
from datanet import Datanet, DatanetError, Submission, Table, deal, load_table, validate
from datanet.contributors import GROUND_TRUTH_COLUMNS
from datanet.data import split_test
from datanet.datanet import TEST_FRACTION
from datanet.training import TrainConfig, TrainResult, train
from datanet.validation import Decision, Schema, dataset_version
from datanet_lab.params import DEFAULTS, MAX_UNITS, STAKE_UNITS, ParameterError, check_value
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.tabular.attribute_step import (read_scores, roll_up, run_payload, submission_order,
                                                         training_task, write_scores)
from datanet_lab.pipeline.tabular.build_step import stake_records, submission_records
from datanet_lab.pipeline.engine import Procedure, Record, run_step
from datanet_lab.pipeline.tabular.pay_step import epoch_entries, epoch_units, stakes_left
from datanet_lab.pipeline.run import ATTRIBUTOR, CURATOR, PAYOUT_AUTHORITY, TRAINER, VALIDATOR, Run, check_signing_keys
from datanet_lab.pipeline.tabular.train_step import trained_from, training_record
from ledger import proofs
from ledger.reputation import REPUTATION_RULE, RoundRecord, reputation_plan, reputation_weight


@dataclass(frozen=True)
class Member:
    """A contributor of the plan: its id, its ``role`` and the round it joins."""

    contributor: str
    role: str
    joins: int


TURN_ROUND = 3
"""The round the upgrader supersedes its older rows and the sleeper starts poisoning."""
CAST = (
    Member("c00", "honest", 1), Member("c01", "honest", 1), Member("c02", "honest", 1),
    Member("c03", "upgrader", 1), Member("c04", "noisy", 1), Member("c05", "duplicate", 1),
    Member("c06", "sleeper", 1), Member("c07", "late_joiner", 2),
)
ROLES = ("honest", "late_joiner", "upgrader", "noisy", "duplicate", "sleeper")
EARNINGS_COLUMNS = ["round", "contributor", "role", "behaviour", "accepted", "rejected", "live_rows", "superseded",
                    "credit", "batch_influence", "weight", "slashed", "payout", "cumulative"]
"""One row per round and joined contributor: the round's submissions (``behaviour`` is what it
planted, ``accepted``/``rejected`` what validators said), its rows in the round's version
(``live_rows``) and those superseded that round, its net ``credit`` (positive = helped) and its
new batch's part of it (``batch_influence``), its reputation ``weight``, the units ``slashed``
and paid in the round's epoch, and its ``cumulative`` payouts through the round."""


@dataclass(frozen=True)
class RoundState:
    """What :func:`run_rounds` hands ``on_round`` after round ``round`` has retrained and
    re-attributed, before its payout epoch closes. ``run.ledger()`` opens the ledger (entries a
    hook appends land in the round, inside the next consistency proof); ``credit`` is indexed by
    every joined contributor (positive = helped)."""

    round: int
    run: Run
    datanet: Datanet
    trained: TrainResult
    credit: pd.Series


@dataclass(frozen=True)
class RoundsResult:
    """What :func:`run_rounds` made: the earnings table (:data:`EARNINGS_COLUMNS`), the version
    of each round (round 1 first), each round's signed head document, the checked consistency
    proof from each round's head to the next (rounds 2..R), and whether payouts used reputation."""

    directory: Path
    earnings: pd.DataFrame
    versions: tuple[str, ...]
    heads: tuple[dict[str, Any], ...]
    consistency: tuple[proofs.ProofCheck, ...]
    reputation: bool
    seconds: float

    @property
    def ledger_path(self) -> Path:
        return self.directory / "ledger.sqlite"


def behaviour(role: str, round_: int) -> str:
    """What a contributor of ``role`` submits in ``round_``: ``honest``, ``noisy`` (labels flipped
    at ``noise_rate``), ``duplicate`` or ``poisoned`` (labels flipped at ``poison_rate``)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {list(ROLES)}")
    if role == "upgrader":
        return "noisy" if round_ < TURN_ROUND else "honest"
    if role == "sleeper":
        return "honest" if round_ < TURN_ROUND else "poisoned"
    return "honest" if role == "late_joiner" else role


def batch_size(member: Member, round_: int, batch_rows: int) -> int:
    """Rows ``member`` submits in ``round_`` (0 before it joins; the upgrader's round-3 batch is double)."""
    if round_ < member.joins:
        return 0
    return 2 * batch_rows if member.role == "upgrader" and round_ == TURN_ROUND else batch_rows


def rows_needed(rounds: int, batch_rows: int) -> int:
    """Pool rows the plan draws over ``rounds`` (duplicates draw none: they copy)."""
    return sum(batch_size(m, r, batch_rows) for r in range(1, rounds + 1) for m in CAST if m.role != "duplicate")


def fitting_batch_rows(dataset: str, label_column: str, rounds: int, wanted: int) -> int:
    """The largest batch size ``<= wanted`` whose plan over ``rounds`` rounds fits the rows
    ``dataset`` leaves to contributors (the held-out test set's size does not depend on the seed).

    Raises:
        ParameterError: not even one row per batch fits.
    """
    pool = len(split_test(load_table(dataset, label_column), TEST_FRACTION, 0)[0])
    fitting = [b for b in range(1, wanted + 1) if rows_needed(rounds, b) <= pool]
    if not fitting:
        raise ParameterError(f"rounds={rounds}: dataset {dataset!r} leaves {pool} rows, fewer than the plan needs "
                             f"with one row per batch ({rows_needed(rounds, 1)})")
    return fitting[-1]


def run_rounds(directory: str | Path, rounds: int = 4, seed: int = 0, dataset: str = "digits", model: str = "logreg",
               epochs: int = DEFAULTS["epochs"], batch_rows: int = 30, noise_rate: float = DEFAULTS["noise_rate"],
               poison_rate: float = 0.5, reward_pool: int = DEFAULTS["reward_pool"], attribution_method: str = "tracin_fast",
               reputation: bool = True, on_round: Callable[[RoundState], None] | None = None,
               label_column: str = "", signing_keys: str = "random") -> RoundsResult:
    """Grow a Datanet over ``rounds`` rounds in ``directory`` by the module's plan.

    One ledger (``directory/ledger.sqlite``) and one keystore (``directory/keystore/``), its keys
    made as ``signing_keys`` says (:data:`~datanet_lab.pipeline.run.SIGNING_KEYS`), timestamps
    from the fixed ``RUN_CLOCK``: the same arguments give the same earnings and entry payloads,
    and with ``signing_keys="seeded"`` the same ledger heads too.
    ``epochs`` of SGD train ``model`` each round; ``attribution_method`` is a registry name;
    ``reward_pool`` units are paid per round. Writes ``rounds/round-<r>/`` (``dataset/``,
    ``checkpoints/``, ``history.csv``, ``attribution/``, ``earnings.csv``, ``head.json``,
    ``consistency.json``), ``rounds/planted.csv`` (what each submission planted, researchers only)
    and ``rounds/earnings.csv`` (the result's table).

    Each round is four steps on the step engine (:func:`round_steps`; record, train, attribute,
    pay), so a run stopped anywhere finishes when called again with the same arguments, each
    entry recorded once, and a finished run is read back; more ``rounds`` with the same other
    arguments grow a finished run further. ``on_round`` runs when a round's pay step computes
    (again, if that step was stopped before its manifest).

    Raises:
        ParameterError: a parameter of the wrong type or out of range, or a pool too small for
            the plan; nothing is written.
        DatanetError: ``directory`` holds another kind of run (a ledger without a rounds run);
            :class:`~datanet_lab.pipeline.manifest.ManifestError` when it holds rounds grown with
            other arguments. Nothing is changed.
    """
    started = time.perf_counter()
    _check(rounds, seed, model, epochs, batch_rows, noise_rate, poison_rate, reward_pool, attribution_method,
           reputation, on_round)
    check_signing_keys(signing_keys)
    table = load_table(dataset, label_column)
    pool, test = split_test(table, TEST_FRACTION, seed)
    if rows_needed(rounds, batch_rows) > len(pool):
        raise ParameterError(f"rounds={rounds}, batch_rows={batch_rows}: the plan draws {rows_needed(rounds, batch_rows)} "
                             f"rows but dataset {dataset!r} leaves {len(pool)} for contributors")
    params = {"dataset": dataset, "label_column": label_column, "seed": seed, "model": model, "epochs": epochs,
              "batch_rows": batch_rows, "noise_rate": noise_rate, "poison_rate": poison_rate, "reward_pool": reward_pool,
              "attribution_method": attribution_method, "reputation": reputation, "signing_keys": signing_keys}
    run = Run(Path(directory), params)
    if run.ledger_path.exists() and not manifest.manifest_path(run.directory, round_steps(1)[0]).is_file():
        raise DatanetError(f"{run.ledger_path} exists without a rounds run: {run.directory} holds another run; "
                           f"use a fresh directory")
    run.directory.mkdir(parents=True, exist_ok=True)
    batches, planted = plan_submissions(table, pool, rounds, batch_rows, noise_rate, poison_rate, seed)
    grower = _Grower(run, table, test, TrainConfig(model=model, epochs=epochs, seed=seed), on_round)
    grown = [grower.grow(r, submissions) for r, submissions in enumerate(batches, start=1)]
    earnings = pd.concat([g.earnings for g in grown], ignore_index=True)
    earnings["cumulative"] = earnings.groupby("contributor")["payout"].cumsum()
    planted.to_csv(run.path("rounds", "planted.csv"), index=False)
    earnings[EARNINGS_COLUMNS].to_csv(run.path("rounds", "earnings.csv"), index=False)
    return RoundsResult(run.directory, earnings[EARNINGS_COLUMNS], tuple(grower.versions), tuple(g.head for g in grown),
                        tuple(g.consistency for g in grown if g.consistency is not None), reputation,
                        time.perf_counter() - started)


ROUND_PARAMS = ("dataset", "label_column", "seed", "model", "epochs", "batch_rows", "noise_rate", "poison_rate",
                "reward_pool", "attribution_method", "reputation")
"""The parameters a round's steps depend on (not ``rounds``: round ``r`` is the same in a longer run)."""


def round_steps(r: int) -> tuple[manifest.Step, manifest.Step, manifest.Step, manifest.Step]:
    """Round ``r``'s steps, in order: record (the version's ``dataset/`` and its ledger batch),
    train, attribute and pay (its earnings, its signed head and, after round 1, the consistency
    proof from the previous round's head). Round ``r``'s record step reads round ``r - 1``'s pay."""
    folder = f"rounds/round-{r}"
    record = manifest.Step(f"round-{r}-record", ROUND_PARAMS, (f"round-{r - 1}-pay",) if r > 1 else (),
                           (f"{folder}/dataset",))
    train = manifest.Step(f"round-{r}-train", ROUND_PARAMS, (record.name,), (f"{folder}/checkpoints", f"{folder}/history.csv"))
    attribute = manifest.Step(f"round-{r}-attribute", ROUND_PARAMS, (record.name, train.name), (f"{folder}/attribution",))
    pay = manifest.Step(f"round-{r}-pay", ROUND_PARAMS, (record.name, train.name, attribute.name),
                        (f"{folder}/earnings.csv", f"{folder}/head.json", *([f"{folder}/consistency.json"] if r > 1 else [])))
    return record, train, attribute, pay


def _check(rounds: int, seed: int, model: str, epochs: int, batch_rows: int, noise_rate: float, poison_rate: float,
           reward_pool: int, attribution_method: str, reputation: bool, on_round: Callable | None) -> None:
    """Raise :class:`ParameterError` naming the first bad argument (the batch parameters by
    :func:`~datanet_lab.params.check_value`)."""
    for name, value in (("seed", seed), ("model", model), ("epochs", epochs), ("noise_rate", noise_rate),
                        ("reward_pool", reward_pool), ("attribution_method", attribution_method)):
        check_value(name, value)
    for name, value, low in (("rounds", rounds, TURN_ROUND), ("batch_rows", batch_rows, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ParameterError(f"{name} must be an integer >= {low}, got {value!r}"
                                 + (" (the plan's last event happens in round 3)" if name == "rounds" else ""))
    if isinstance(poison_rate, bool) or not isinstance(poison_rate, (int, float)) or not 0.0 <= poison_rate <= 1.0:
        raise ParameterError(f"poison_rate must be a number in [0, 1], got {poison_rate!r}")
    if not isinstance(reputation, bool):
        raise ParameterError(f"reputation must be True or False, got {reputation!r}")
    if on_round is not None and not callable(on_round):
        raise ParameterError(f"on_round must be a function of a RoundState or None, got {on_round!r}")
    if reward_pool + len(CAST) * STAKE_UNITS > MAX_UNITS:
        raise ParameterError(f"reward_pool={reward_pool} plus the {len(CAST) * STAKE_UNITS} units the contributors stake "
                             f"passes the ledger's integer range 2**53-1 = {MAX_UNITS}")


def plan_submissions(table: Table, pool: np.ndarray, rounds: int, batch_rows: int, noise_rate: float,
                     poison_rate: float, seed: int) -> tuple[list[list[Submission]], pd.DataFrame]:
    """Each round's submissions (in :data:`CAST` order, duplicates last) and the planted truth.

    Sample ids are ``r<round>-<contributor>-<k>``. Batches are cut in order from a ``seed``-ed
    shuffle of ``pool``; each contributor's batch goes through :func:`datanet.deal` with its
    round's behaviour (seeded by ``(seed, round, contributor)``), ``poisoned`` as ``noisy`` at
    ``poison_rate``. A duplicate copies the batch of a contributor drawn from the round's others.

    Returns:
        submissions per round, and the truth: :data:`datanet.contributors.GROUND_TRUTH_COLUMNS`
        plus ``round`` and ``role``, one row per submission (``behaviour`` as :func:`behaviour`).
    """
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(pool)
    taken, batches, truth = 0, [], []
    for r in range(1, rounds + 1):
        submissions: list[Submission] = []
        for index, member in enumerate(CAST):
            size = batch_size(member, r, batch_rows)
            planted = behaviour(member.role, r)
            if not size or planted == "duplicate":
                continue
            as_dealt, rate = ("noisy", poison_rate) if planted == "poisoned" else (planted, noise_rate)
            child = int(np.random.SeedSequence((seed, r, index)).generate_state(1)[0])
            dealt, frame = deal(table, shuffled[taken:taken + size], {member.contributor: as_dealt}, rate, child)
            taken += size
            submissions += [Submission(f"r{r}-{s.sample_id}", s.contributor, s.features, s.label) for s in dealt]
            truth.append(frame.assign(sample_id=f"r{r}-" + frame["sample_id"], behaviour=planted, round=r, role=member.role))
        originals = sorted({s.contributor for s in submissions})
        for member in (m for m in CAST if m.role == "duplicate" and r >= m.joins):
            source = originals[rng.integers(len(originals))]
            copied = [s for s in submissions if s.contributor == source]
            copies = [Submission(f"r{r}-{member.contributor}-{k:05d}", member.contributor, s.features, s.label)
                      for k, s in enumerate(copied)]
            truth.append(pd.DataFrame({"sample_id": [c.sample_id for c in copies], "contributor": member.contributor,
                                       "behaviour": "duplicate", "source_row": -1, "is_bad": True,
                                       "reason": [f"copy of {s.sample_id} from {source}" for s in copied],
                                       "round": r, "role": member.role}))
            submissions += copies
        batches.append(submissions)
    return batches, pd.concat(truth, ignore_index=True)[["round", "role", *GROUND_TRUTH_COLUMNS]]


@dataclass(frozen=True)
class Grown:
    """What round ``r`` left: its earnings rows (without ``cumulative``), its signed head and the
    checked consistency proof from the previous round's head (``None`` in round 1)."""

    earnings: pd.DataFrame
    head: dict[str, Any]
    consistency: proofs.ProofCheck | None


@dataclass(frozen=True)
class _Epoch:
    """A round's payout epoch as planned: its ledger records and the earnings rows it pays."""

    records: list[Record]
    rows: list[dict[str, Any]]


class _Grower:
    """The state carried from round to round: every submission and decision so far, the rows
    live in the current version, the versions, and each contributor's reputation history. Each
    round's state is recomputed from the plan (cheap and deterministic); what a round's steps
    computed is read back when their manifests match."""

    def __init__(self, run: Run, table: Table, test: np.ndarray, config: TrainConfig,
                 on_round: Callable[[RoundState], None] | None) -> None:
        self.run, self.table, self.config, self.on_round = run, table, config, on_round
        self.schema = Schema(n_features=len(table.feature_names), label_set=table.label_set)
        self.class_index = {label: i for i, label in enumerate(table.label_set)}
        self.test_x = table.features[test].astype(np.float32)
        self.test_y = np.array([self.class_index[label] for label in table.labels[test].tolist()], dtype=np.int64)
        self.submissions: list[Submission] = []
        self.decisions: list[Decision] = []
        self.live: dict[str, tuple[Submission, Decision, int]] = {}  # sample id -> (submission, decision, round)
        self.versions: list[str] = []
        self.histories: dict[str, list[RoundRecord]] = {}

    def grow(self, r: int, submissions: list[Submission]) -> Grown:
        """Round ``r`` (module docstring), its four steps run or read back by the step engine."""
        joined = tuple(m.contributor for m in CAST if m.joins <= r)
        decisions = validate(self.submissions + submissions, self.schema)[len(self.submissions):]
        self.submissions += submissions
        self.decisions += decisions
        superseded = sorted(s for s, (sub, _, _) in self.live.items()
                            if r == TURN_ROUND and _role(sub.contributor) == "upgrader")
        for sample_id in superseded:
            del self.live[sample_id]
        self.live.update({s.sample_id: (s, d, r) for s, d in zip(submissions, decisions) if d.accepted})
        dn = self._datanet(joined)
        counts = _counts(decisions, joined)
        steps = round_steps(r)
        folder = self.run.directory / "rounds" / f"round-{r}"
        since = partial(_epoch_closed_at, epoch=r - 1)  # the round's entries follow the previous epoch's close

        def staged(staging: Path) -> Path:
            return staging / "rounds" / f"round-{r}"

        parent = self.versions[-1] if self.versions else None
        record = Procedure(steps[0], lambda run, staging: dn.save(staged(staging) / "dataset"),
                           lambda run: Datanet.load(folder / "dataset"),
                           records=lambda run, _: _version_records(r, joined, decisions, dn, superseded, parent),
                           roles=lambda run, _: _roles(r), since=since)
        train_ = Procedure(steps[1], lambda run, staging: self._train(dn, staged(staging)),
                           lambda run: trained_from(folder, self.config.model, dn),
                           records=lambda run, trained: [training_record(dn.version, self.config, trained, round=r)],
                           since=since, requires=(record,))
        dn = run_step(self.run, record)
        trained = run_step(self.run, train_)
        attribute = Procedure(steps[2], lambda run, staging: self._attribute(r, dn, trained, staged(staging)),
                              lambda run: read_scores(Run(folder, run.params)),
                              records=lambda run, payload: [("attribution_run", ATTRIBUTOR, payload)],
                              since=since, requires=(train_,))
        _, samples, credit = run_step(self.run, attribute)
        influence, magnitude = batch_credit(samples, r, joined)
        pay = Procedure(steps[3], lambda run, staging: self._plan(r, joined, counts, superseded, dn, trained, samples, credit),
                        lambda run: self._read_round(r, folder),
                        records=lambda run, epoch: epoch.records, since=since, requires=(attribute,),
                        from_ledger=lambda run, staging, epoch: self._write_round(r, staged(staging), epoch))
        grown = run_step(self.run, pay)
        slashed = grown.earnings.set_index("contributor")["slashed"]
        for c in joined:
            self.histories.setdefault(c, []).append(RoundRecord(int(counts.at[c, "accepted"]), int(counts.at[c, "rejected"]),
                                                                int(slashed[c]), float(influence[c]), float(magnitude[c])))
        self.versions.append(dn.version)
        return grown

    def _datanet(self, joined: tuple[str, ...]) -> Datanet:
        """The version of the rows live now (accepted and not superseded), in submission order."""
        live = list(self.live.values())
        return Datanet(
            name=self.table.name, version=dataset_version(d for _, d, _ in live), schema=self.schema,
            feature_names=self.table.feature_names, image_shape=self.table.image_shape, contributors=joined,
            decisions=pd.DataFrame([vars(d) for d in self.decisions]),
            train_x=np.array([s.features for s, _, _ in live], dtype=np.float32),
            train_y=np.array([self.class_index[s.label] for s, _, _ in live], dtype=np.int64),
            train_ids=np.array([s.sample_id for s, _, _ in live]),
            train_contributors=np.array([s.contributor for s, _, _ in live]),
            test_x=self.test_x, test_y=self.test_y,
        )

    def _train(self, dn: Datanet, staging: Path) -> TrainResult:
        trained = train(dn, self.config, staging / "checkpoints")
        trained.history.to_csv(staging / "history.csv", index=False)
        return trained

    def _attribute(self, r: int, dn: Datanet, trained: TrainResult, staging: Path) -> dict[str, Any]:
        """Scores ``(n_live, n_test)`` and their roll-up (per-sample ``shared_credit`` with the
        ``round`` of submission) under ``staging/attribution/``; the ``attribution_run`` payload,
        with each contributor's new batch's influence and magnitude."""
        method = self.run.params["attribution_method"]
        scores = attribution.make_attributor(method, self.run.params["seed"]).fit(training_task(dn, trained)).scores(
            torch.from_numpy(dn.test_x), torch.from_numpy(dn.test_y))
        rollup = roll_up(dn, scores, trained.model, submission_order(self.run, dn))
        rollup.sample_credit["round"] = [self.live[s][2] for s in dn.train_ids]
        write_scores(Run(staging, self.run.params), scores, rollup)
        influence, magnitude = batch_credit(rollup.sample_credit, r, dn.contributors)
        return run_payload(method, dn.version, trained.checkpoints, scores, rollup) | {
            "round": r, "batch_influence": influence.to_dict(), "batch_magnitude": magnitude.to_dict()}

    def _plan(self, r: int, joined: tuple[str, ...], counts: pd.DataFrame, superseded: list[str], dn: Datanet,
              trained: TrainResult, samples: pd.DataFrame, credit: pd.Series) -> _Epoch:
        """Epoch ``r`` (after ``on_round``): slashes against what is left at stake, the split
        (weighted by reputation through round ``r`` when the run uses it), as ledger records and
        earnings rows."""
        if self.on_round is not None:
            self.on_round(RoundState(r, self.run, dn, trained, credit))
        magnitude = samples["shared_credit"].abs().groupby(samples["contributor"]).sum().reindex(joined, fill_value=0.0)
        influence, batch_magnitude = batch_credit(samples, r, joined)
        with ledger.Ledger(self.run.ledger_path) as book:  # read only
            at_stake = dict.fromkeys(joined, 0) | stakes_left(book, r)
        submitted = counts["accepted"] + counts["rejected"]
        plan = ledger.plan_epoch(r, self.run.params["reward_pool"], credit.to_dict(), magnitude.to_dict(), at_stake,
                                 submitted.to_dict(), counts["rejected"].to_dict())
        slashed = dict.fromkeys(joined, 0)
        for slash in plan.slashes:
            slashed[slash.contributor] += slash.amount
        weights = {c: reputation_weight([*self.histories.get(c, []), RoundRecord(
            int(counts.at[c, "accepted"]), int(counts.at[c, "rejected"]), slashed[c], float(influence[c]),
            float(batch_magnitude[c]))]) for c in joined}
        reputation = self.run.params["reputation"]
        if reputation:
            plan = reputation_plan(plan, credit.to_dict(), weights)
        rule = REPUTATION_RULE if reputation else ledger.epochs.RULE
        records = ledger.epoch_records(plan, PAYOUT_AUTHORITY, rule, dataset_version=dn.version)
        live = pd.Series([s.contributor for s, _, _ in self.live.values()]).value_counts()
        gone = pd.Series([s.split("-")[1] for s in superseded], dtype=object).value_counts()
        return _Epoch(records, [{"round": r, "contributor": c, "role": _role(c), "behaviour": behaviour(_role(c), r),
                                 "accepted": int(counts.at[c, "accepted"]), "rejected": int(counts.at[c, "rejected"]),
                                 "live_rows": int(live.get(c, 0)), "superseded": int(gone.get(c, 0)), "credit": float(credit[c]),
                                 "batch_influence": float(influence[c]), "weight": weights[c]} for c in joined])

    def _write_round(self, r: int, staging: Path, epoch: _Epoch) -> None:
        """Round ``r``'s ``earnings.csv`` (units slashed and paid as the ledger's epoch ``r``
        records them), its signed ``head.json`` and, after round 1, ``consistency.json``."""
        with ledger.Ledger(self.run.ledger_path) as book:  # read only
            recorded = epoch_entries(book, r)
            head = proofs.head_document(book)
            previous = self._read_head(r - 1) if r > 1 else None
            document = proofs.consistency_document(book, previous["size"]) if previous else None
        rows = pd.DataFrame(epoch.rows)
        slashed, paid = epoch_units(recorded)
        rows["slashed"] = [slashed.get(c, 0) for c in rows["contributor"]]
        rows["payout"] = [paid.get(c, 0) for c in rows["contributor"]]
        staging.mkdir(parents=True, exist_ok=True)
        rows.to_csv(staging / "earnings.csv", index=False)
        (staging / "head.json").write_text(json.dumps(head, indent=2) + "\n")
        if document is not None:
            (staging / "consistency.json").write_text(json.dumps(document, indent=2) + "\n")

    def _read_head(self, r: int) -> dict[str, Any]:
        return json.loads((self.run.directory / "rounds" / f"round-{r}" / "head.json").read_text())

    def _read_round(self, r: int, folder: Path) -> Grown:
        """Round ``r``'s pay step outputs, its consistency proof checked against the previous
        round's head (the log key pinned).

        Raises:
            ledger.LedgerIntegrityError: round ``r``'s head does not extend round ``r - 1``'s.
        """
        earnings = pd.read_csv(folder / "earnings.csv", keep_default_na=False)
        check = None
        if r > 1:
            previous = self._read_head(r - 1)
            check = proofs.check_document(json.loads((folder / "consistency.json").read_text()),
                                          log_key=previous["log_public_key"])
            if not check.ok:
                raise ledger.LedgerIntegrityError(f"{self.run.ledger_path}: round {r}'s head does not extend round "
                                                  f"{r - 1}'s: {check}")
        return Grown(earnings, json.loads((folder / "head.json").read_text()), check)


def _counts(decisions: list[Decision], joined: tuple[str, ...]) -> pd.DataFrame:
    """``accepted`` and ``rejected`` submissions of the round per joined contributor."""
    frame = pd.DataFrame([(d.contributor, d.accepted) for d in decisions], columns=["contributor", "accepted"])
    accepted = frame.groupby("contributor")["accepted"].sum().reindex(joined, fill_value=0).astype(int)
    submitted = frame.groupby("contributor").size().reindex(joined, fill_value=0).astype(int)
    return pd.DataFrame({"accepted": accepted, "rejected": submitted - accepted})


def _version_records(r: int, joined: tuple[str, ...], decisions: list[Decision], dn: Datanet, superseded: list[str],
                     parent: str | None) -> list[Record]:
    """Round ``r``'s batch: joiners' stakes, the round's contributions and decisions, the version."""
    joiners = [m.contributor for m in CAST if m.joins == r]
    return [*stake_records(joiners), *submission_records(decisions, dn.name, round=r), ("dataset_version", CURATOR, {
        "version": dn.version, "parent": parent, "round": r, "datanet": dn.name, "accepted": len(dn.train_ids),
        "rejected": sum(not d.accepted for d in decisions), "contributors": len(joined), "test_samples": len(dn.test_y),
        "superseded": superseded})]


def _roles(r: int) -> dict[str, str]:
    """The actors round ``r`` registers: the operators in round 1, and the contributors joining."""
    operators = {VALIDATOR: "validator", CURATOR: "curator", TRAINER: "trainer", ATTRIBUTOR: "attributor",
                 PAYOUT_AUTHORITY: "payout-authority"} if r == 1 else {}
    return operators | {m.contributor: "contributor" for m in CAST if m.joins == r}


def _epoch_closed_at(run: Run, epoch: int) -> int:
    """The ledger sequence number of payout ``epoch``'s closing entry (0 for epoch 0: none)."""
    if epoch == 0:
        return 0
    with ledger.Ledger(run.ledger_path) as book:  # read only
        return next(e.seq for e in book.entries("payout_epoch") if e.payload["epoch"] == epoch)


def batch_credit(samples: pd.DataFrame, r: int, contributors: tuple[str, ...]) -> tuple[pd.Series, pd.Series]:
    """Influence (sum of ``shared_credit``) and magnitude (sum of its absolute value) of the rows
    each of ``contributors`` submitted in round ``r``, from a roll-up's per-sample table with a
    ``round`` column; 0 for a contributor with no such row."""
    fresh = samples[samples["round"] == r]
    by = fresh.groupby("contributor")["shared_credit"]
    return (by.sum().reindex(contributors, fill_value=0.0).astype(float),
            by.apply(lambda v: v.abs().sum()).reindex(contributors, fill_value=0.0).astype(float))


def _role(contributor: str) -> str:
    return next(m.role for m in CAST if m.contributor == contributor)


def reputation_effect(with_reputation: RoundsResult, without: RoundsResult, first_round: int = TURN_ROUND) -> pd.DataFrame:
    """Each contributor's earnings over rounds ``first_round``..R in two runs of the same plan,
    one paid with reputation and one without: ``role, without, with, change`` (units; change =
    with - without), indexed by contributor.

    Raises:
        ValueError: the runs grew different Datanets (other seeds, data or rounds), or are not one
            with and one without reputation.
    """
    if with_reputation.versions != without.versions:
        raise ValueError("the two runs grew different Datanet versions: compare runs of the same arguments")
    if not with_reputation.reputation or without.reputation:
        raise ValueError(f"expected a run with reputation then one without, got reputation="
                         f"{with_reputation.reputation} and {without.reputation}")
    totals = {}
    for name, result in (("without", without), ("with", with_reputation)):
        late = result.earnings[result.earnings["round"] >= first_round]
        totals[name] = late.groupby("contributor")["payout"].sum()
    table = pd.DataFrame({"role": [_role(c) for c in totals["with"].index], **totals}, index=totals["with"].index)
    table["change"] = table["with"] - table["without"]
    return table
