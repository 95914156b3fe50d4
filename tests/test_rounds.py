"""A Datanet grown in rounds (datanet_lab.experiments.rounds): ledger, proofs, versions, payouts, reputation.

Small runs (3 rounds of 15-row batches, 2 epochs, every label of the sleeper's poisoned batches
flipped) with and without reputation, shared by the module. Expected values come from the ledger
and from Fraction arithmetic here, not from the code under test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections import Counter
from fractions import Fraction

import pandas as pd
import pytest

import ledger
from datanet import Datanet, DatanetError
from datanet_lab.params import ParameterError
from datanet_lab.pipeline import engine, manifest
from datanet_lab.pipeline.manifest import ManifestError
from datanet_lab.experiments.rounds import CAST, TURN_ROUND, RoundState, reputation_effect, run_rounds
from datanet_lab.rounds_figures import cumulative_earnings
from ledger import proofs
from ledger.reputation import RoundRecord, reputation_weight

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(rounds=3, batch_rows=15, epochs=2, poison_rate=1.0, reward_pool=100_000)
ROUNDS = SMALL["rounds"]
SLEEPER = next(m.contributor for m in CAST if m.role == "sleeper")
UPGRADER = next(m.contributor for m in CAST if m.role == "upgrader")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``{True: with reputation, False: without}`` and the states a hook saw in the first."""
    states: list[RoundState] = []
    found = {True: run_rounds(tmp_path_factory.mktemp("with"), on_round=states.append, **SMALL),
             False: run_rounds(tmp_path_factory.mktemp("without"), reputation=False, **SMALL)}
    return found, states


def _entries(result, kind):
    with ledger.Ledger(result.ledger_path) as book:
        return list(book.entries(kind))


def test_the_ledger_verifies_and_closes_epochs_1_to_r_once_each(runs):
    for result in runs[0].values():
        report = ledger.verify(result.ledger_path)
        assert report.ok, report
        assert [e.payload["epoch"] for e in _entries(result, "payout_epoch")] == list(range(1, ROUNDS + 1))
        assert len(_entries(result, "dataset_version")) == len(_entries(result, "training_run")) == ROUNDS


def test_each_epoch_records_the_split_rule_it_used(runs):
    for reputation, result in runs[0].items():
        rules = {e.payload["rule"] for e in _entries(result, "payout_epoch")}
        assert rules == {"largest remainder over positive credit x reputation weight (ledger.reputation); "
                         "slashes rest on the raw credit; slashed stakes join the pool"
                         if reputation else "largest remainder over positive credit; slashed stakes join the pool"}


def test_consistency_proofs_link_consecutive_heads_and_a_tampered_head_fails(runs):
    result = runs[0][True]
    assert len(result.consistency) == ROUNDS - 1 and all(check.ok for check in result.consistency)
    key = result.heads[0]["log_public_key"]
    sizes = [head["size"] for head in result.heads]
    assert sizes == sorted(set(sizes)) and sizes[-1] == ledger.verify(result.ledger_path).entries
    for r in range(2, ROUNDS + 1):
        folder = result.directory / "rounds" / f"round-{r}"
        document = json.loads((folder / "consistency.json").read_text())
        old = json.loads((result.directory / "rounds" / f"round-{r - 1}" / "head.json").read_text())
        new = json.loads((folder / "head.json").read_text())
        assert {k: document["old_head"][k] for k in ("size", "root")} == {k: old[k] for k in ("size", "root")}
        assert {k: document["new_head"][k] for k in ("size", "root")} == {k: new[k] for k in ("size", "root")}
        assert proofs.check_document(document, log_key=key).ok
        forged_root = {**document, "new_head": {**document["new_head"], "root": "00" * 32}}
        assert proofs.check_document(forged_root, log_key=key).status == "bad-head"
        other_head = {**document, "old_head": result.heads[0] if r > 2 else new}
        assert not proofs.check_document(other_head, log_key=key).ok
        with ledger.Ledger(result.ledger_path) as book:
            assert proofs.check_head(book, new, log_key=key).ok


def test_versions_chain_and_superseded_rows_leave_later_versions(runs):
    result = runs[0][True]
    versions = [e.payload for e in _entries(result, "dataset_version")]
    assert [v["version"] for v in versions] == list(result.versions)
    assert [v["parent"] for v in versions] == [None, *result.versions[:-1]]
    accepted = {e.payload["sample_id"] for e in _entries(result, "validation") if e.payload["accepted"]}
    rounds_of = {e.payload["sample_id"]: e.payload["round"] for e in _entries(result, "contribution")}
    older = sorted(s for s in accepted if rounds_of[s] < TURN_ROUND and s.split("-")[1] == UPGRADER)
    assert len(older) == 2 * SMALL["batch_rows"]  # its sloppy rows were all accepted
    assert [v["superseded"] for v in versions] == [[], [], older]
    hashes = {e.payload["sample_id"]: e.payload["content_hash"] for e in _entries(result, "contribution")}
    for r, version in enumerate(versions, start=1):
        dn = Datanet.load(result.directory / "rounds" / f"round-{r}" / "dataset")
        expected = {s for s in accepted if rounds_of[s] <= r} - (set(older) if r >= TURN_ROUND else set())
        assert set(dn.train_ids) == expected and dn.version == version["version"]
        content = "\n".join(sorted(hashes[s] for s in expected)).encode("ascii")
        assert version["version"] == "dv-" + hashlib.sha256(content).hexdigest()


def test_the_same_seed_gives_the_same_earnings_and_entry_payloads(runs, tmp_path):
    again = run_rounds(tmp_path, **SMALL)
    first = runs[0][True]
    pd.testing.assert_frame_equal(again.earnings, first.earnings)
    assert [h["size"] for h in again.heads] == [h["size"] for h in first.heads]
    assert [(e.kind, e.actor, e.payload) for e in _entries(again, None)] == \
           [(e.kind, e.actor, e.payload) for e in _entries(first, None)]
    assert ledger.verify(again.ledger_path).head_hash != ledger.verify(first.ledger_path).head_hash  # random keys
    assert pd.read_csv(tmp_path / "rounds" / "earnings.csv").equals(pd.read_csv(first.directory / "rounds" / "earnings.csv"))


def test_each_epoch_conserves_money_and_the_stakes_bound_the_slashes(runs):
    for result in runs[0].values():
        payouts = Counter()
        for e in _entries(result, "payout"):
            payouts[e.payload["epoch"]] += e.payload["amount"]
        for e in _entries(result, "payout_epoch"):
            p = e.payload
            assert p["paid"] + p["unallocated"] == p["pool"] + p["slashed"] and p["pool"] == SMALL["reward_pool"]
            assert payouts[p["epoch"]] == p["paid"]
        by_round = result.earnings.groupby("round")[["payout", "slashed"]].sum()
        assert (by_round["payout"] == SMALL["reward_pool"] + by_round["slashed"]).all()
        slashed = result.earnings.groupby("contributor")["slashed"].sum()
        assert (slashed <= 1000).all() and slashed[next(m.contributor for m in CAST if m.role == "duplicate")] == 1000


def test_weights_follow_from_the_ledger_and_weigh_credit_before_the_split(runs):
    result = runs[0][True]
    rounds_of = {e.payload["sample_id"]: (e.payload["round"], e.actor) for e in _entries(result, "contribution")}
    counts = Counter((*rounds_of[e.payload["sample_id"]], e.payload["accepted"]) for e in _entries(result, "validation"))
    slashes = Counter()
    for e in _entries(result, "slash"):
        slashes[e.payload["epoch"], e.payload["contributor"]] += e.payload["amount"]
    runs_by_round = {e.payload["round"]: e.payload for e in _entries(result, "attribution_run")}
    history: dict[str, list[RoundRecord]] = {}
    for row in result.earnings.itertuples():
        run = runs_by_round[row.round]
        history.setdefault(row.contributor, []).append(RoundRecord(
            counts[row.round, row.contributor, True], counts[row.round, row.contributor, False],
            slashes[row.round, row.contributor], run["batch_influence"].get(row.contributor, 0.0),
            run["batch_magnitude"].get(row.contributor, 0.0)))
        assert row.weight == reputation_weight(history[row.contributor])
        assert row.credit == run["contributor_credit"][row.contributor]
    for r, rows in result.earnings.groupby("round"):
        total = SMALL["reward_pool"] + int(rows["slashed"].sum())
        weighted = {c: Fraction(max(credit, 0.0)) * Fraction(w)
                    for c, credit, w in zip(rows["contributor"], rows["credit"], rows["weight"])}
        for c, paid in zip(rows["contributor"], rows["payout"]):
            assert abs(paid - total * weighted[c] / sum(weighted.values())) < 1, (r, c)


def test_reputation_cuts_the_sleeper_from_the_round_it_turns(runs):
    found = runs[0]
    earnings = found[True].earnings.set_index(["round", "contributor"])
    weight = earnings["weight"].unstack()
    batch = earnings["batch_influence"].unstack()[SLEEPER]
    assert (batch.loc[:TURN_ROUND - 1] > 0).all() and batch.loc[TURN_ROUND] < 0  # it turns harmful in round 3
    assert weight.loc[TURN_ROUND, SLEEPER] < 0.3 * weight.loc[TURN_ROUND - 1, SLEEPER]
    honest = [m.contributor for m in CAST if m.role == "honest"]
    assert (weight.loc[:, honest] > 0.9).all().all()
    effect = reputation_effect(found[True], found[False])
    assert effect.loc[SLEEPER, "with"] < 0.3 * effect.loc[SLEEPER, "without"]
    # Same Datanet, same slashes; the split moves shares, never the total.
    without = found[False].earnings.set_index(["round", "contributor"])
    pd.testing.assert_series_equal(earnings["credit"], without["credit"])
    pd.testing.assert_series_equal(earnings["slashed"], without["slashed"])
    pd.testing.assert_series_equal(earnings.groupby("round")["payout"].sum(), without.groupby("round")["payout"].sum())


def test_the_hook_sees_every_round_before_its_epoch_closes(runs):
    found, states = runs
    assert [s.round for s in states] == list(range(1, ROUNDS + 1))
    assert tuple(s.datanet.version for s in states) == found[True].versions
    credit = found[True].earnings.set_index(["round", "contributor"])["credit"]
    for s in states:
        assert s.credit.to_dict() == credit.loc[s.round].to_dict()


def test_the_planted_sleeper_turns_and_batches_share_no_row(runs):
    planted = pd.read_csv(runs[0][True].directory / "rounds" / "planted.csv")
    sleeper = planted[planted["contributor"] == SLEEPER].groupby("round")["is_bad"].mean()
    assert sleeper.to_dict() == {1: 0.0, 2: 0.0, 3: 1.0}
    originals = planted[planted["behaviour"] != "duplicate"]
    assert originals["source_row"].is_unique and originals["sample_id"].is_unique


def test_the_figure_shows_both_policies(runs):
    found = runs[0]
    fig = cumulative_earnings(found[True], found[False])
    left, right = fig.axes
    assert left.get_ylabel() == "cumulative earnings (units)" and left.get_xlabel().startswith("round")
    assert len(right.get_legend().get_texts()) == len(CAST) and len(left.lines) == len(CAST) + 1  # + the turn
    with pytest.raises(ValueError, match="reputation"):
        cumulative_earnings(found[False], found[True])


@pytest.mark.parametrize(("change", "named"), [
    ({"rounds": 2}, "rounds"), ({"rounds": True}, "rounds"), ({"batch_rows": 0}, "batch_rows"),
    ({"batch_rows": 200}, "the plan draws"), ({"poison_rate": 1.5}, "poison_rate"), ({"noise_rate": -0.1}, "noise_rate"),
    ({"reward_pool": -1}, "reward_pool"), ({"reward_pool": 2**53}, "reward_pool"), ({"model": "cnn"}, "model"),
    ({"attribution_method": "nope"}, "attribution_method"), ({"seed": -1}, "seed"), ({"epochs": 0}, "epochs"),
    ({"reputation": "yes"}, "reputation"), ({"on_round": 5}, "on_round"), ({"signing_keys": "fixed"}, "signing_keys"),
])
def test_bad_parameters_are_refused_by_name_and_write_nothing(tmp_path, change, named):
    with pytest.raises(ParameterError, match=named):
        run_rounds(tmp_path / "run", **{**SMALL, **change})
    assert not (tmp_path / "run").exists()


def test_a_finished_run_is_read_back_and_other_arguments_are_refused_unchanged(runs):
    result = runs[0][True]
    before = result.ledger_path.read_bytes()
    again = run_rounds(result.directory, **SMALL)  # every round's manifests match: nothing is recomputed
    pd.testing.assert_frame_equal(again.earnings, result.earnings)
    assert again.heads == result.heads and result.ledger_path.read_bytes() == before
    with pytest.raises(ManifestError, match=r"round-1-record: .* was made with reward_pool=100000, this run asks for "
                                            r"reward_pool=100001; use a fresh run directory"):
        run_rounds(result.directory, **(SMALL | {"reward_pool": SMALL["reward_pool"] + 1}))
    assert result.ledger_path.read_bytes() == before
    other = dataclasses.replace(runs[0][False], versions=runs[0][False].versions[:-1])
    with pytest.raises(ValueError, match="different Datanet"):
        reputation_effect(result, other)
    with pytest.raises(ValueError, match="reputation"):
        reputation_effect(runs[0][False], result)


def test_a_directory_that_holds_another_kind_of_run_is_refused_unchanged(tmp_path):
    from datanet_lab import pipeline

    run = pipeline.open_run(str(tmp_path), dataset="wine", n_contributors=3, scenario="honest:3", epochs=1)
    pipeline.build(run)
    before = run.ledger_path.read_bytes()
    with pytest.raises(DatanetError, match="holds another run; use a fresh directory"):
        run_rounds(tmp_path, **SMALL)
    assert run.ledger_path.read_bytes() == before and not (tmp_path / "rounds").exists()


def _stop_at_call(function, call: int, after: bool):
    """``function``, stopped (KeyboardInterrupt) at its ``call``-th call, before or ``after`` it runs."""
    calls = []

    def stopped(*args, **kwargs):
        calls.append(None)
        if len(calls) == call and not after:
            raise KeyboardInterrupt("stopped")
        out = function(*args, **kwargs)
        if len(calls) == call:
            raise KeyboardInterrupt("stopped")
        return out
    return stopped


ROUND_STOPS = {  # each round is four steps (record, train, attribute, pay); call n is step n of the run
    "after round 1's epoch is recorded": (engine, "append_once", 4, True),
    "after round 2's training record": (engine, "append_once", 6, True),
    "before round 2's attribution manifest": (manifest, "write", 7, False),
    "after round 3's first pay output is in place": (engine, "move_into_place", 18, True),  # 6 + 7 + 5 moves
}


@pytest.mark.parametrize("where", ROUND_STOPS)
def test_a_run_stopped_anywhere_finishes_when_called_again_as_if_never_stopped(runs, tmp_path, monkeypatch, where):
    module, name, call, after = ROUND_STOPS[where]
    with monkeypatch.context() as patched:
        patched.setattr(module, name, _stop_at_call(getattr(module, name), call, after))
        with pytest.raises(KeyboardInterrupt):
            run_rounds(tmp_path, **SMALL)
    finished = run_rounds(tmp_path, **SMALL)
    whole = runs[0][True]
    pd.testing.assert_frame_equal(finished.earnings, whole.earnings)
    assert [(e.kind, e.actor, e.payload) for e in _entries(finished, None)] == \
           [(e.kind, e.actor, e.payload) for e in _entries(whole, None)]  # every entry once
    assert ledger.verify(finished.ledger_path).ok and [h["size"] for h in finished.heads] == [h["size"] for h in whole.heads]


def test_more_rounds_grow_a_finished_run_as_a_longer_run_grows(runs, tmp_path):
    longer = run_rounds(tmp_path / "longer", **(SMALL | {"rounds": ROUNDS + 1}))
    shutil.copytree(runs[0][True].directory, tmp_path / "grown")
    grown = run_rounds(tmp_path / "grown", **(SMALL | {"rounds": ROUNDS + 1}))
    pd.testing.assert_frame_equal(grown.earnings, longer.earnings)
    assert [(e.kind, e.payload) for e in _entries(grown, None)] == [(e.kind, e.payload) for e in _entries(longer, None)]


def test_batch_rows_shrink_to_what_a_small_dataset_leaves():
    from datanet_lab.experiments.rounds import fitting_batch_rows, rows_needed

    assert fitting_batch_rows("digits", "", 4, 30) == 30  # 1,437 rows leave room for 30 per batch
    fitted = fitting_batch_rows("wine", "", 3, 30)  # 142 rows for contributors
    assert fitted < 30 and rows_needed(3, fitted) <= 142 < rows_needed(3, fitted + 1)
    with pytest.raises(ParameterError, match="fewer than the plan needs"):
        fitting_batch_rows("wine", "", 40, 30)
