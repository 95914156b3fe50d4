"""The pipeline steps on the default scenario (in-process, without papermill)."""

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import ledger
from datanet.training import train
from datanet_lab import pipeline
from datanet_lab.pipeline import text


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    run = pipeline.open_run(str(tmp_path_factory.mktemp("run")))
    return run, pipeline.pay(run)  # builds, trains and attributes first


def test_honest_contributors_earn_more_per_accepted_sample_than_noisy_ones(default_run):
    _, payouts = default_run
    per_sample = (payouts["payout"] / payouts["accepted"]).groupby(payouts["behaviour"]).mean()
    assert per_sample["honest"] > per_sample["noisy"]


def test_payouts_sum_to_the_pool_and_harmful_data_earns_nothing(default_run):
    run, payouts = default_run
    # Slashed stakes join the pool (ledger.epochs): the duplicate contributor's data was all rejected.
    assert payouts["payout"].sum() == run.params["reward_pool"] + payouts["slashed"].sum()
    assert (payouts["slashed"] <= payouts["stake"] // 2)[payouts["rejected"] == 0].all()
    assert (payouts.loc[payouts["attribution"] <= 0, "payout"] == 0).all()
    duplicate = payouts[payouts["behaviour"] == "duplicate"].iloc[0]
    assert duplicate["accepted"] == 0 and duplicate["payout"] == 0
    assert duplicate["slashed"] == duplicate["stake"] == pipeline.STAKE_UNITS


def test_a_step_on_its_own_builds_what_it_needs(tmp_path):
    run = pipeline.open_run(str(tmp_path), dataset="wine", n_contributors=3, scenario="honest:3", epochs=1)
    result = pipeline.attribute(run)
    assert (tmp_path / "dataset" / "meta.json").is_file() and (tmp_path / "training" / "history.csv").is_file()
    assert result.scores.shape[0] == len(pipeline.datanet(run).train_y)


def test_the_attribution_method_parameter_decides_the_scores_and_is_recorded(tmp_path):
    params = dict(dataset="wine", n_contributors=3, scenario="honest:3", epochs=1)
    default = pipeline.attribute(pipeline.open_run(str(tmp_path / "a"), **params))
    run = pipeline.open_run(str(tmp_path / "b"), attribution_method="grad_cosine", **params)
    cosine = pipeline.attribute(run)
    assert not np.allclose(default.scores, cosine.scores)
    assert np.abs(cosine.scores).max() <= 1 + 1e-6  # cosines of gradients
    with run.ledger() as book:
        (record,) = book.entries("attribution_run")
    assert record.payload["method"] == "grad_cosine"


def test_payout_credit_is_the_redundancy_aware_rollup(default_run):
    run, payouts = default_run
    samples = pd.read_csv(run.directory / "attribution" / "sample_credit.csv")
    summed = samples.groupby("contributor")["shared_credit"].sum()
    np.testing.assert_allclose(payouts.set_index("contributor").loc[summed.index, "attribution"], summed)
    # Validators rejected the exact duplicates; no two distinct accepted digits are near-copies.
    assert samples["cluster"].nunique() == len(samples)


def test_a_near_copy_submitted_later_under_another_identity_earns_nothing(tmp_path):
    run = pipeline.open_run(str(tmp_path), dataset="wine", n_contributors=3, scenario="honest:3", epochs=1)
    dn = pipeline.datanet(run)
    rows = np.flatnonzero(dn.train_contributors == "c00")[:5]
    noise = np.random.default_rng(0).normal(0, 1e-3, (len(rows), dn.train_x.shape[1])) * dn.train_x.std(axis=0)
    copied = dataclasses.replace(
        dn, train_x=np.concatenate([dn.train_x, (dn.train_x[rows] + noise).astype(np.float32)]),
        train_y=np.concatenate([dn.train_y, dn.train_y[rows]]), train_ids=np.concatenate([dn.train_ids, [f"c02-copy-{i}" for i in rows]]),
        train_contributors=np.concatenate([dn.train_contributors, ["c02"] * len(rows)]))
    trained = train(copied, pipeline.train_config(run), tmp_path / "copied")
    scored = pipeline.score(copied, trained, "tracin_captum", 0)
    order = np.concatenate([pipeline.submission_order(run, dn), 10**6 + np.arange(len(rows))])  # copies come later
    samples = pipeline.roll_up(copied, scored.scores, trained.model, order).sample_credit
    originals, copies = samples.iloc[rows], samples.iloc[len(dn.train_y):]
    np.testing.assert_array_equal(copies["cluster"].to_numpy(), originals["cluster"].to_numpy())
    assert samples["cluster"].nunique() == len(dn.train_y)
    pair = originals["credit"].to_numpy() + copies["credit"].to_numpy()
    np.testing.assert_allclose(originals["shared_credit"].to_numpy(), pair / 2)
    assert (copies["shared_credit"] == 0).all()


WINE = dict(dataset="wine", n_contributors=3, scenario="honest:3", epochs=1)


def _entries(run) -> list[str]:
    with run.ledger() as book:
        return [entry.kind for entry in book.entries()]


def test_a_step_reuses_outputs_its_manifest_matches_and_records_once(tmp_path):
    first = pipeline.attribute(pipeline.open_run(str(tmp_path), **WINE))
    run = pipeline.open_run(str(tmp_path), reward_pool=5, **WINE)  # a parameter attribution does not depend on
    again = pipeline.attribute(run)
    np.testing.assert_array_equal(again.scores, first.scores)
    kinds = _entries(run)
    assert kinds.count("training_run") == kinds.count("attribution_run") == kinds.count("dataset_version") == 1
    manifest = json.loads((tmp_path / "manifests" / "train.json").read_text())
    assert manifest["params"] == {k: run.params[k] for k in pipeline.manifest.TRAIN.params}
    assert set(manifest["inputs"]) == {"build"}
    assert "training/checkpoints/epoch_001.pt" in manifest["outputs"]
    assert sorted(p.name for p in (tmp_path / "manifests").iterdir()) == ["attribute.json", "build.json", "train.json"]


@pytest.mark.parametrize("change, message", [
    ({"epochs": 2}, r"train: .* was made with epochs=1, this run asks for epochs=2"),
    ({"noise_rate": 0.1}, r"build: .* was made with noise_rate=0.2, this run asks for noise_rate=0.1"),
    ({"attribution_method": "grad_dot"}, r"attribute: .*attribution_method='tracin_captum'.*'grad_dot'"),
])
def test_reusing_a_run_directory_with_other_parameters_is_refused(tmp_path, change, message):
    pipeline.attribute(pipeline.open_run(str(tmp_path), **WINE))
    run = pipeline.open_run(str(tmp_path), **(WINE | change))
    before = _entries(run)
    with pytest.raises(pipeline.ManifestError, match=message):
        pipeline.pay(run)
    assert _entries(run) == before and not (tmp_path / "payouts.csv").exists()


def test_a_tampered_output_file_is_caught(tmp_path):
    run = pipeline.open_run(str(tmp_path), **WINE)
    pipeline.attribute(run)
    checkpoint = tmp_path / "training" / "checkpoints" / "epoch_001.pt"
    data = bytearray(checkpoint.read_bytes())
    data[-100] ^= 1
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(pipeline.ManifestError, match="train: output training/checkpoints/epoch_001.pt was altered"):
        pipeline.attribute(run)
    (tmp_path / "attribution" / "extra.npy").write_bytes(b"")
    checkpoint.write_bytes(bytes(data[:-100]) + bytes([data[-100] ^ 1]) + bytes(data[-99:]))  # restored
    with pytest.raises(pipeline.ManifestError, match="attribute: attribution/extra.npy was added"):
        pipeline.attribute(run)


def test_outputs_without_a_manifest_made_otherwise_or_from_a_changed_input_are_refused(tmp_path):
    run = pipeline.open_run(str(tmp_path), **WINE)
    pipeline.train_model(run)
    (tmp_path / "manifests" / "train.json").unlink()
    before = _entries(run)
    with pytest.raises(pipeline.ManifestError, match=r"train: .* already records this step otherwise"):
        pipeline.train_model(pipeline.open_run(str(tmp_path), **(WINE | {"epochs": 2})))
    assert _entries(run) == before and not (tmp_path / "manifests" / "train.json").exists()
    run = pipeline.open_run(str(tmp_path / "b"), **WINE)
    pipeline.train_model(run)
    (tmp_path / "b" / "planted" / "notes.txt").write_text("rebuilt")
    pipeline.manifest.write(run.directory, pipeline.manifest.BUILD, run.params)  # build's outputs changed since
    with pytest.raises(pipeline.ManifestError, match=r"train: its input manifests/build.json changed"):
        pipeline.train_model(run)
    edited = json.loads((tmp_path / "b" / "manifests" / "build.json").read_text())
    edited["params"]["noise_rate"] = 0.5
    (tmp_path / "b" / "manifests" / "build.json").write_text(json.dumps(edited))
    with pytest.raises(pipeline.ManifestError, match=r"build: .*build.json was edited"):
        pipeline.datanet(run)


@pytest.fixture(scope="module")
def attributed(tmp_path_factory):
    """A WINE run directory attributed but not paid, and its payout made without interruption."""
    directory = tmp_path_factory.mktemp("attributed")
    pipeline.attribute(pipeline.open_run(str(directory), **WINE))
    reference = _copy(directory, tmp_path_factory.mktemp("uninterrupted"))
    return directory, reference, pipeline.pay(reference)


def _copy(directory, tmp_path):
    shutil.copytree(directory, tmp_path / "run")
    return pipeline.open_run(str(tmp_path / "run"), **WINE)


def _ledger_records(run) -> list[tuple[str, str, dict]]:
    with run.ledger() as book:
        return [(e.kind, e.actor, e.payload) for e in book.entries()]


def _stop_after(function):
    def stopped(*args, **kwargs):
        function(*args, **kwargs)
        raise KeyboardInterrupt("stopped")
    return stopped


def _stop_after_the_ledger_append(monkeypatch):
    monkeypatch.setattr(ledger.Ledger, "append_many", _stop_after(ledger.Ledger.append_many))


def test_a_finished_pay_is_reused_and_its_epoch_is_never_recorded_twice(attributed, tmp_path):
    directory, _, paid = attributed
    run = _copy(directory, tmp_path)
    pd.testing.assert_frame_equal(pipeline.pay(run), paid)
    before = _ledger_records(run)
    pd.testing.assert_frame_equal(pipeline.pay(run), paid)  # the manifest matches: the stored payouts
    assert _ledger_records(run) == before
    with run.ledger() as book, pytest.raises(ledger.LedgerError, match="already paid"):
        closing = list(book.entries("payout_epoch"))[-1]
        book.append("payout_epoch", closing.actor, closing.payload)  # the ledger refuses epoch 1 again
    assert _ledger_records(run) == before


def test_a_stopped_pay_is_not_finished_with_other_parameters(attributed, tmp_path, monkeypatch):
    directory, _, _ = attributed
    run = _copy(directory, tmp_path)
    with monkeypatch.context() as patched:
        _stop_after_the_ledger_append(patched)
        with pytest.raises(KeyboardInterrupt):
            pipeline.pay(run)
    before = _ledger_records(run)
    other = pipeline.open_run(str(tmp_path / "run"), **(WINE | {"reward_pool": run.params["reward_pool"] + 1}))
    with pytest.raises(pipeline.ManifestError, match=r"pay: .* already records this step otherwise than this run computes it "
                                                     r"\(record \d+ of \d+: the ledger holds"):
        pipeline.pay(other)
    assert _ledger_records(run) == before
    assert not run.path("payouts.csv").exists() and not run.path("metrics.json").exists()


KILLED_PAY = """
import os, signal, sys
import ledger
from datanet_lab import pipeline
append = ledger.Ledger.append_many
def append_then_die(self, records):
    records = list(records)
    entries = append(self, records)
    if any(kind == "payout_epoch" for kind, _, _ in records):
        os.kill(os.getpid(), signal.SIGKILL)
    return entries
ledger.Ledger.append_many = append_then_die
pipeline.pay(pipeline.open_run(sys.argv[1], dataset="wine", n_contributors=3, scenario="honest:3", epochs=1))
"""


@pytest.mark.slow
def test_a_pay_killed_after_its_ledger_append_finishes_when_run_again(attributed, tmp_path):
    directory, reference, paid = attributed
    run = _copy(directory, tmp_path)
    killed = subprocess.run([sys.executable, "-c", KILLED_PAY, str(run.directory)], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert not run.path("payouts.csv").exists()
    pd.testing.assert_frame_equal(pipeline.pay(run), paid)
    assert _ledger_records(run) == _ledger_records(reference)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_a_text_pay_stopped_after_its_ledger_append_finishes_when_run_again(tmp_path, monkeypatch):
    small = {"text_per_package": 12, "text_epochs": 1, "text_ig_examples": 1, "reward_pool": 10_000}
    text.attribute_text(text.text_run(pipeline.open_run(str(tmp_path / "attributed"), **small)))
    runs = []
    for name in ("uninterrupted", "stopped"):
        shutil.copytree(tmp_path / "attributed", tmp_path / name)
        runs.append(text.text_run(pipeline.open_run(str(tmp_path / name), **small)))
    reference, run = runs
    paid = text.pay_text(reference)
    with monkeypatch.context() as patched:
        _stop_after_the_ledger_append(patched)
        with pytest.raises(KeyboardInterrupt):
            text.pay_text(run)
    pd.testing.assert_frame_equal(text.pay_text(run), paid)
    assert run.path("payouts.csv").read_bytes() == reference.path("payouts.csv").read_bytes()
    assert _ledger_records(run) == _ledger_records(reference)
    pipeline.manifest.check(run.directory, pipeline.manifest.TEXT_PAY, run.params)
