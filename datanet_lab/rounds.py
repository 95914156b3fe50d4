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
:func:`~datanet_lab.pipeline.attribute_step.roll_up`), each run recorded; ``on_round`` is called;
payout epoch ``r`` pays ``reward_pool`` (:func:`ledger.plan_epoch`: slashes against what is left
of each stake, on the round's rejections and the contributor's net credit; with ``reputation``,
the split is over credit × :func:`ledger.reputation.reputation_weight`,
:func:`ledger.reputation.reputation_plan`); the signed head is saved as
``rounds/round-<r>/head.json`` and, from round 2, ``consistency.json`` proves it extends the
previous round's head (checked on the spot, the log key pinned).

A contributor's reputation history gets one record per round from its join: the round's accepted
and rejected submissions, the units slashed in the round's epoch, and the realised influence (sum
and sum of magnitudes of shared credit) of the batch it submitted that round, as that round's
attribution measured it. Every one of these numbers is in the ledger (validation, slash and
``attribution_run`` entries), so the weights can be recomputed from it.
"""

from __future__ import annotations

import json
import time
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
from datanet.models import load_checkpoint
from datanet.training import TrainConfig, TrainResult, train
from datanet.validation import Decision, Schema, dataset_version
from datanet_lab.params import DEFAULTS, MAX_UNITS, STAKE_UNITS, ParameterError, check_value
from datanet_lab.pipeline.attribute_step import roll_up, run_payload, submission_order
from datanet_lab.pipeline.run import ATTRIBUTOR, CURATOR, PAYOUT_AUTHORITY, TRAINER, VALIDATOR, Run, check_signing_keys
from datanet_lab.provenance import file_sha256
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
    """Grow a Datanet over ``rounds`` rounds in the fresh ``directory`` by the module's plan.

    One ledger (``directory/ledger.sqlite``) and one keystore (``directory/keystore/``), its keys
    made as ``signing_keys`` says (:data:`~datanet_lab.pipeline.run.SIGNING_KEYS`), timestamps
    from the fixed ``RUN_CLOCK``: the same arguments give the same earnings and entry payloads,
    and with ``signing_keys="seeded"`` the same ledger heads too.
    ``epochs`` of SGD train ``model`` each round; ``attribution_method`` is a registry name;
    ``reward_pool`` units are paid per round. Writes ``rounds/round-<r>/`` (``dataset/``,
    ``checkpoints/``, ``head.json``, ``consistency.json``), ``rounds/planted.csv`` (what each
    submission planted, researchers only) and ``rounds/earnings.csv`` (the result's table).

    Raises:
        ParameterError: a parameter of the wrong type or out of range, or a pool too small for
            the plan; nothing is written.
        DatanetError: ``directory`` already holds a ledger or a rounds run; nothing is changed.
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
    run = Run(Path(directory), {"seed": seed, "signing_keys": signing_keys})
    for taken in (run.ledger_path, run.directory / "rounds"):
        if taken.exists():
            raise DatanetError(f"{taken} exists: {run.directory} already holds a run; use a fresh directory")
    run.directory.mkdir(parents=True, exist_ok=True)
    batches, planted = plan_submissions(table, pool, rounds, batch_rows, noise_rate, poison_rate, seed)
    grower = _Grower(run, table, test, TrainConfig(model=model, epochs=epochs, seed=seed), attribution_method, seed)
    rows, heads, checks, cumulative = [], [], [], {}
    for r, submissions in enumerate(batches, start=1):
        round_rows = grower.grow(r, submissions, reward_pool, reputation, on_round)
        for row in round_rows:
            cumulative[row["contributor"]] = cumulative.get(row["contributor"], 0) + row["payout"]
            row["cumulative"] = cumulative[row["contributor"]]
        rows += round_rows
        heads.append(grower.save_head(r, heads[-1] if heads else None, checks))
    earnings = pd.DataFrame(rows, columns=EARNINGS_COLUMNS)
    planted.to_csv(run.path("rounds", "planted.csv"), index=False)
    earnings.to_csv(run.path("rounds", "earnings.csv"), index=False)
    return RoundsResult(run.directory, earnings, tuple(grower.versions), tuple(heads), tuple(checks), reputation,
                        time.perf_counter() - started)


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


class _Grower:
    """The state carried from round to round: every submission and decision so far, the rows
    live in the current version, the versions, and each contributor's reputation history."""

    def __init__(self, run: Run, table: Table, test: np.ndarray, config: TrainConfig, method: str, seed: int) -> None:
        self.run, self.table, self.config, self.method, self.seed = run, table, config, method, seed
        self.schema = Schema(n_features=len(table.feature_names), label_set=table.label_set)
        self.class_index = {label: i for i, label in enumerate(table.label_set)}
        self.test_x = table.features[test].astype(np.float32)
        self.test_y = np.array([self.class_index[label] for label in table.labels[test].tolist()], dtype=np.int64)
        self.submissions: list[Submission] = []
        self.decisions: list[Decision] = []
        self.live: dict[str, tuple[Submission, Decision, int]] = {}  # sample id -> (submission, decision, round)
        self.versions: list[str] = []
        self.histories: dict[str, list[RoundRecord]] = {}

    def grow(self, r: int, submissions: list[Submission], reward_pool: int, reputation: bool,
             on_round: Callable[[RoundState], None] | None) -> list[dict[str, Any]]:
        """Round ``r`` (module docstring); its earnings rows, without ``cumulative``."""
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
        self._record(r, joined, decisions, dn, superseded)
        trained = train(dn, self.config, self.folder(r) / "checkpoints")
        dn.save(self.folder(r) / "dataset")
        self._record_training(r, dn, trained)
        sample_credit, credit = self._attribute(r, dn, trained)
        if on_round is not None:
            on_round(RoundState(r, self.run, dn, trained, credit))
        return self._pay(r, joined, decisions, superseded, sample_credit, credit, reward_pool, reputation)

    def folder(self, r: int) -> Path:
        """Round ``r``'s folder, ``rounds/round-<r>/``."""
        return self.run.directory / "rounds" / f"round-{r}"

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

    def _record(self, r: int, joined: tuple[str, ...], decisions: list[Decision], dn: Datanet, superseded: list[str]) -> None:
        """One batch: joiners' stakes, the round's contributions and decisions, the version."""
        joiners = [m.contributor for m in CAST if m.joins == r]
        records = [("stake", c, {"contributor": c, "amount": STAKE_UNITS}) for c in joiners]
        records += [("contribution", d.contributor, {"sample_id": d.sample_id, "content_hash": d.content_hash,
                                                     "datanet": dn.name, "round": r}) for d in decisions]
        records += [("validation", VALIDATOR, {"sample_id": d.sample_id, "accepted": d.accepted, "reason": d.reason})
                    for d in decisions]
        records.append(("dataset_version", CURATOR, {
            "version": dn.version, "parent": self.versions[-1] if self.versions else None, "round": r,
            "datanet": dn.name, "accepted": len(dn.train_ids), "rejected": sum(not d.accepted for d in decisions),
            "contributors": len(joined), "test_samples": len(dn.test_y), "superseded": superseded}))
        roles = {VALIDATOR: "validator", CURATOR: "curator", TRAINER: "trainer", ATTRIBUTOR: "attributor",
                 PAYOUT_AUTHORITY: "payout-authority"} if r == 1 else {}
        with self.run.ledger() as book:
            for actor, role in {**roles, **{c: "contributor" for c in joiners}}.items():
                book.register(actor, role)
            book.append_many(records)
        self.versions.append(dn.version)

    def _record_training(self, r: int, dn: Datanet, trained: TrainResult) -> None:
        last = trained.history.iloc[-1]
        payload = {"dataset_version": dn.version, "round": r, "config": self.config.to_dict(),
                   "checkpoints": [{"file": p.name, "sha256": file_sha256(p)} for p in trained.checkpoints],
                   "metrics": {"test_accuracy": float(last["test_accuracy"]), "test_loss": float(last["test_loss"])}}
        with self.run.ledger() as book:
            book.append("training_run", TRAINER, payload)

    def _attribute(self, r: int, dn: Datanet, trained: TrainResult) -> tuple[pd.DataFrame, pd.Series]:
        """Scores ``(n_live, n_test)``, the roll-up (per-sample ``shared_credit`` with its ``round``
        of submission; contributor credit), and the ``attribution_run`` entry with each
        contributor's new batch's influence and magnitude."""
        task = attribution.AttributionTask(trained.model, torch.from_numpy(dn.train_x), torch.from_numpy(dn.train_y),
                                           trained.checkpoints, load_checkpoint)
        scores = attribution.make_attributor(self.method, self.seed).fit(task).scores(
            torch.from_numpy(dn.test_x), torch.from_numpy(dn.test_y))
        rollup = roll_up(dn, scores, trained.model, submission_order(self.run, dn))
        samples = rollup.sample_credit.assign(round=[self.live[s][2] for s in dn.train_ids])
        influence, magnitude = batch_credit(samples, r, dn.contributors)
        payload = run_payload(self.method, dn.version, trained.checkpoints, scores, rollup) | {
            "round": r, "batch_influence": influence.to_dict(), "batch_magnitude": magnitude.to_dict()}
        with self.run.ledger() as book:
            book.append("attribution_run", ATTRIBUTOR, payload)
        return samples, rollup.contributor_credit

    def _pay(self, r: int, joined: tuple[str, ...], decisions: list[Decision], superseded: list[str],
             samples: pd.DataFrame, credit: pd.Series, reward_pool: int, reputation: bool) -> list[dict[str, Any]]:
        """Epoch ``r``: slashes against what is left at stake, reputation histories extended by
        the round, the split (weighted with ``reputation``), recorded in one batch."""
        counts = pd.DataFrame([(d.contributor, d.accepted) for d in decisions], columns=["contributor", "accepted"])
        accepted = counts.groupby("contributor")["accepted"].sum().reindex(joined, fill_value=0).astype(int)
        submitted = counts.groupby("contributor").size().reindex(joined, fill_value=0).astype(int)
        rejected = submitted - accepted
        magnitude = samples["shared_credit"].abs().groupby(samples["contributor"]).sum().reindex(joined, fill_value=0.0)
        influence, batch_magnitude = batch_credit(samples, r, joined)
        with self.run.ledger() as book:
            at_stake = dict.fromkeys(joined, 0)
            for entry in book.entries("stake"):
                at_stake[entry.payload["contributor"]] += entry.payload["amount"]
            for entry in book.entries("slash"):
                at_stake[entry.payload["contributor"]] -= entry.payload["amount"]
            plan = ledger.plan_epoch(r, reward_pool, credit.to_dict(), magnitude.to_dict(), at_stake,
                                     submitted.to_dict(), rejected.to_dict())
            slashed = dict.fromkeys(joined, 0)
            for slash in plan.slashes:
                slashed[slash.contributor] += slash.amount
            weights = {}
            for c in joined:
                self.histories.setdefault(c, []).append(RoundRecord(int(accepted[c]), int(rejected[c]), slashed[c],
                                                                    float(influence[c]), float(batch_magnitude[c])))
                weights[c] = reputation_weight(self.histories[c])
            if reputation:
                plan = reputation_plan(plan, credit.to_dict(), weights)
            rule = REPUTATION_RULE if reputation else ledger.epochs.RULE
            book.append_many(ledger.epoch_records(plan, PAYOUT_AUTHORITY, rule, dataset_version=self.versions[-1]))
        live = pd.Series([s.contributor for s, _, _ in self.live.values()]).value_counts()
        gone = pd.Series([s.split("-")[1] for s in superseded], dtype=object).value_counts()
        return [{"round": r, "contributor": c, "role": _role(c), "behaviour": behaviour(_role(c), r),
                 "accepted": int(accepted[c]), "rejected": int(rejected[c]), "live_rows": int(live.get(c, 0)),
                 "superseded": int(gone.get(c, 0)), "credit": float(credit[c]), "batch_influence": float(influence[c]),
                 "weight": weights[c], "slashed": slashed[c], "payout": plan.split.payouts[c]} for c in joined]

    def save_head(self, r: int, previous: dict[str, Any] | None, checks: list[proofs.ProofCheck]) -> dict[str, Any]:
        """Save round ``r``'s signed head and, after round 1, the consistency proof from
        ``previous`` (checked with the log key pinned; the check joins ``checks``)."""
        folder = self.folder(r)
        folder.mkdir(parents=True, exist_ok=True)
        with ledger.Ledger(self.run.ledger_path) as book:  # read only
            head = proofs.head_document(book)
            document = proofs.consistency_document(book, previous["size"]) if previous else None
        (folder / "head.json").write_text(json.dumps(head, indent=2) + "\n")
        if document is not None:
            (folder / "consistency.json").write_text(json.dumps(document, indent=2) + "\n")
            check = proofs.check_document(document, log_key=previous["log_public_key"])
            if not check.ok:
                raise ledger.LedgerIntegrityError(f"{self.run.ledger_path}: round {r}'s head does not extend round "
                                                  f"{r - 1}'s: {check}")
            checks.append(check)
        return head


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
