"""The text run's steps on a small docstring Datanet and on a user's JSONL file (in-process)."""

import json

import numpy as np
import pandas as pd
import pytest

import attribution
import ledger
from datanet_lab import pipeline
from datanet_lab.experiments import compare_text
from datanet_lab.pipeline import text
from datanet_lab.pipeline.manifest import ManifestError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
SMALL = {"text_per_package": 12, "text_epochs": 1, "text_ig_examples": 1, "reward_pool": 10_000}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    run = text.text_run(pipeline.open_run(str(tmp_path_factory.mktemp("run")), **SMALL))
    return run, text.pay_text(run)  # builds, encodes, trains and attributes first


def test_the_text_run_lives_in_its_own_directory_with_its_own_verified_ledger(small_run):
    run, payouts = small_run
    assert run.directory.name == "text" and run.ledger_path == run.directory / "ledger.sqlite"
    report = ledger.verify(run.ledger_path)
    assert report.ok
    with run.ledger() as book:
        kinds = [e.kind for e in book.entries()]
    for kind in ("contribution", "validation", "dataset_version", "training_run", "attribution_run", "payout_epoch"):
        assert kind in kinds
    assert payouts["payout"].sum() == run.params["reward_pool"] + payouts["slashed"].sum()


def test_the_dataset_version_records_package_versions_and_the_corpus_hash(small_run):
    run, _ = small_run
    with run.ledger() as book:
        (version,) = [e.payload for e in book.entries("dataset_version")]
    dn = text.build_text(run).datanet
    assert version["version"] == dn.version
    assert version["max_tokens"] == run.params["text_max_tokens"]
    source = version["source"]
    assert set(source["versions"]) == {"numpy", "pandas", "scipy", "sklearn", "torch", "matplotlib", "transformers"}
    assert len(source["corpus_sha256"]) == 64


def test_every_rejection_is_on_the_ledger_with_its_reason(small_run):
    run, _ = small_run
    with run.ledger() as book:
        verdicts = {e.payload["sample_id"]: e.payload for e in book.entries("validation")}
    dn = text.build_text(run).datanet
    assert len(verdicts) == len(dn.decisions)
    rejected = [v for v in verdicts.values() if not v["accepted"]]
    reasons = " ".join(v["reason"] for v in rejected)
    assert "exact duplicate" in reasons and "near duplicate" in reasons  # the duplicate and the paraphrase sybil
    assert all(v["reason"] != "accepted" for v in rejected)


def test_steps_reuse_their_outputs_and_refuse_other_parameters(small_run):
    run, _ = small_run
    with run.ledger() as book:
        before = book.head().seq
    text.attribute_text(run)  # reused: no new ledger entry
    with run.ledger() as book:
        assert book.head().seq == before
    other = text.text_run(pipeline.open_run(str(run.directory.parent), **{**SMALL, "text_epochs": 2}))
    with pytest.raises(ManifestError, match="text_epochs=1.*text_epochs=2"):
        text.train_text(other)


def test_three_models_are_judged_and_the_fine_tuned_one_is_paid_by(small_run):
    run, _ = small_run
    models = pd.read_csv(run.directory / "training" / "models.csv")
    assert list(models["model"]) == ["minilm", "minilm_frozen", "tfidf_logreg"]
    assert models["test_accuracy"].between(0, 1).all()
    checkpoints = sorted((run.directory / "training" / "checkpoints").glob("epoch_*.pt"))
    assert len(checkpoints) == run.params["text_epochs"]


def test_token_ig_of_clean_and_triggered_texts_is_complete(small_run):
    run, _ = small_run
    found = text.attribute_text(run)
    ig = found.explained.ig
    assert list(found.explained.triggered) == [False, True]
    assert np.abs(ig.convergence_delta).max() < 0.05 * np.abs(ig.attributions).sum(axis=1).max()
    assert (ig.attributions[ig.attention_mask == 0] == 0).all()


def test_a_users_jsonl_file_is_a_text_datanet(tmp_path):
    rows = [{"body": f"{topic} note {i}: " + " ".join(f"{topic}{(i * 7 + k) % 41}" for k in range(12)), "tag": topic}
            for topic in ("alpha", "beta") for i in range(30)]
    path = tmp_path / "notes.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    run = text.text_run(pipeline.open_run(str(tmp_path / "run"), text_dataset=str(path), text_column="body",
                                          text_label_column="tag", text_scenario="honest:2,noisy:1"))
    dn = text.build_text(run).datanet
    assert dn.label_set == ("alpha", "beta") and dn.provenance["kind"] == "file"
    assert len(dn.decisions) + len(dn.test_texts) == 60  # every row submitted or held out
    with run.ledger() as book:
        (version,) = [e.payload for e in book.entries("dataset_version")]
    assert version["source"]["corpus_sha256"] == dn.provenance["corpus_sha256"]


def test_a_missing_text_column_names_it_and_writes_nothing(tmp_path):
    path = tmp_path / "notes.csv"
    pd.DataFrame({"body": ["a b c d e f"] * 4, "tag": ["x", "y"] * 2}).to_csv(path, index=False)
    run = text.text_run(pipeline.open_run(str(tmp_path / "run"), text_dataset=str(path), text_column="text",
                                          text_label_column="tag", text_scenario="honest:2"))
    with pytest.raises(Exception, match="text_column 'text' not in"):
        text.build_text(run)
    assert not run.ledger_path.exists() and not (run.directory / "dataset").exists()


def test_the_sybil_gain_compares_with_the_copied_contributor(small_run):
    run, _ = small_run
    built = text.build_text(run)
    credit = pd.Series(1.0, index=list(built.datanet.contributors))
    (row,) = compare_text.sybil_gain(built, credit.where(credit.index != "c06", 0.0)).itertuples()
    assert row.sybil == "c06" and row.copied in built.datanet.contributors[:5]  # it copies a non-copying one
    assert row.gain == 1.0
    assert compare_text.sybil_gain(built, credit)["gain"].iloc[0] == 2.0


def test_the_backdoor_is_learned_and_its_poisoned_rows_rank_first(small_run):
    run, _ = small_run
    built, encoded, trained = text.build_text(run), text.encode_text(run), text.train_text(run)
    poisoned = compare_text.poisoned_rows(built)
    truth = built.ground_truth.set_index("sample_id").loc[built.datanet.train_ids]
    assert poisoned.any() and (truth["behaviour"][poisoned] == "backdoor").all()
    found = compare_text.backdoor_forensics(built, encoded, trained, attribution.FastTracIn(), seed=0, ks=(3,))
    assert found["poisoned_rows"] == poisoned.sum()
    assert found["auc"] > 0.8 and found["normalized_auc"] > 0.9, found
    unnormalized = compare_text.backdoor_forensics(built, encoded, trained, attribution.RandomScores(0), seed=0, ks=(3,))
    assert np.isnan(unnormalized["normalized_auc"]) and not np.isnan(unnormalized["auc"])  # random has no self-influence
