"""serve-sim: a run served as a stream of receipted inferences, its figures and summary, the same
files from the same run and seed, a bad inputs file refused with nothing written, the CLI."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ledger
from datanet_lab import pipeline, provenance
from datanet_lab.cli import main
from datanet_lab.pipeline.tabular.build_step import datanet
from datanet_lab.serving import RequestError, ServingError, run_test_inputs, served_run
from datanet_lab.serving.economy import FOLDER, RECEIPTS, InferenceEconomy, check_receipts
from datanet_lab.serving import sim
from datanet_lab.serving.sim import request_inputs, serve_sim

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _head(run_dir: Path) -> tuple[int, str]:
    with ledger.Ledger(run_dir / "ledger.sqlite") as book:
        return len(book), book.head().hash


def _features(run_dir: Path) -> list[str]:
    """The run's feature names (the wine dataset's), as a request file's header must give them."""
    return list(datanet(served_run(run_dir)).feature_names)


def test_a_sim_serves_commits_closes_and_draws(run_dir):
    lines = []
    result = serve_sim(run_dir, requests=150, batch_size=64, log=lines.append)
    receipts = [json.loads(line) for line in result.receipts.read_text().splitlines()]
    assert len(receipts) == result.requests == 150
    assert [r["batch_id"] for r in receipts[::64]] == ["batch-00000000", "batch-00000001", "batch-00000002"]
    assert result.epoch.epoch == 1 and result.head_hash == _head(run_dir)[1]
    assert sorted(p.name for p in result.figures) == ["dust.png", "earnings.png"] and all(p.stat().st_size for p in result.figures)
    assert pd.read_csv(result.earnings)["units"].sum() == 150 * 1000
    assert set(result.timings) == {"attribution", "split", "hashing", "commit"} and all(t > 0 for t in result.timings.values())
    assert sum(result.cost_split.values()) == pytest.approx(1.0)
    assert re.fullmatch(r"serve-sim: 150 inferences in [0-9.]+ s = [0-9,]+/s \(attribution \d+%, split \d+%, hashing \d+%, "
                        r"commit \d+%\)", lines[0])
    assert lines[1].startswith("dust: ") and "accrual 0 lost" in lines[1]
    dust = result.dust
    assert (dust.inferences, dust.accrual_lost, dust.fee_total) == (150, 0, 150 * 500)
    assert dust.floor_paid + dust.floor_lost == dust.earned == dust.accrual_paid + round(dust.accrual_carried)
    found = check_receipts(run_dir, sample=20)
    assert found.ok and (found.checked, found.total) == (20, 150)


def test_the_test_set_is_cycled_in_seeded_passes(run_dir):
    run = pipeline.open_run(str(run_dir), **json.loads((run_dir / "manifests" / "attribute.json").read_text())["params"])
    test = run_test_inputs(run)
    x = request_inputs(run, test.shape[1], 2 * len(test) + 3, None, seed=4)
    for first in (0, len(test)):  # each pass is a permutation of the test set
        np.testing.assert_array_equal(np.sort(x[first : first + len(test)], axis=0), np.sort(test, axis=0))
    assert not np.array_equal(x[: len(test)], test)
    np.testing.assert_array_equal(request_inputs(run, test.shape[1], None, None, seed=None), test)
    with pytest.raises(Exception, match="requests must be an integer from 1 to 1,000,000 .*, got 0"):
        request_inputs(run, test.shape[1], 0, None, seed=None)


def test_the_same_run_seed_and_requests_give_the_same_receipts_and_ledger_entries(built, tmp_path):
    outcomes = []
    for name in ("a", "b"):  # each copy's inference host signs with its own random key
        copy = Path(shutil.copytree(built, tmp_path / name))
        result = serve_sim(copy, requests=90, batch_size=32, seed=7, draw=False, log=None)
        outcomes.append((result.receipts.read_bytes(), provenance.ledger_entries_sha256(copy / "ledger.sqlite")))
    assert outcomes[0] == outcomes[1]
    other = serve_sim(Path(shutil.copytree(built, tmp_path / "c")), requests=90, batch_size=32, seed=8, draw=False, log=None)
    assert other.receipts.read_bytes() != outcomes[0][0]


def test_a_second_sim_continues_the_first(run_dir):
    first = serve_sim(run_dir, requests=40, batch_size=16, draw=False, log=None)
    second = serve_sim(run_dir, requests=30, batch_size=16, draw=False, log=None)
    assert (first.epoch.epoch, second.epoch.epoch) == (1, 2)
    receipts = [json.loads(line) for line in second.receipts.read_text().splitlines()]
    assert [r["request_id"] for r in receipts] == [f"req-{i:010d}" for i in range(70)]
    assert len({r["batch_id"] for r in receipts}) == 3 + 2
    assert pd.read_csv(second.earnings)["units"].sum() == 70 * 1000


def test_an_inputs_file_is_served_in_order(run_dir, tmp_path):
    x = run_test_inputs(run_dir)[:5]
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps({"id": i, "features": row.tolist()}) + "\n" for i, row in enumerate(x)))
    result = serve_sim(run_dir, inputs=path, requests=7, draw=False, log=None)
    hashes = [json.loads(line)["input_hash"] for line in result.receipts.read_text().splitlines()]
    assert hashes == [hashlib.sha256(x[i % 5].astype("<f8").tobytes()).hexdigest() for i in range(7)]


def test_a_bad_inputs_file_is_refused_with_nothing_written(run_dir, tmp_path, capsys):
    path = tmp_path / "requests.csv"
    rows = run_test_inputs(run_dir)[:3].astype(object)
    rows[2, 4] = "oops"
    pd.DataFrame(rows, columns=_features(run_dir)).to_csv(path, index=False)
    before = _head(run_dir)
    with pytest.raises(RequestError, match=r"requests.csv: data row 3, field 4 \('magnesium'\) is 'oops'"):
        serve_sim(run_dir, inputs=path, log=None)
    assert main(["serve-sim", str(run_dir), "--inputs", str(path)]) == 2
    assert "data row 3, field 4" in capsys.readouterr().err
    for bad in (["--batch-size", "0"], ["--fee", "-5"], ["--top-k", "0"], ["--requests", "0"]):
        assert main(["serve-sim", str(run_dir), *bad]) == 2
    assert not (run_dir / FOLDER).exists() and _head(run_dir) == before


def test_a_csv_without_a_header_is_served_row_for_row(run_dir, tmp_path):
    """Its first row repeats a value, which pandas would mangle into a header that reads as text."""
    x = run_test_inputs(run_dir)[:3].copy()
    x[0, :2] = 0.0
    path = tmp_path / "requests.csv"
    pd.DataFrame(x).to_csv(path, index=False, header=False)
    result = serve_sim(run_dir, inputs=path, draw=False, log=None)
    hashes = [json.loads(line)["input_hash"] for line in result.receipts.read_text().splitlines()]
    assert result.requests == 3
    assert hashes == [hashlib.sha256(row.astype("<f8").tobytes()).hexdigest() for row in x]


@pytest.mark.parametrize("field, value, reason", [
    (5, 1e308, r"line 301: field 5 is 1e\+308, beyond the float32 range"),  # infinite as a float32
    (0, 3e38, r"input 301 overflows the float32 model once standardized .* field 0 \('alcohol'\) = 3e\+38"),
])
def test_an_input_the_float32_model_cannot_take_is_refused_before_any_receipt(run_dir, tmp_path, field, value, reason):
    x = run_test_inputs(run_dir)
    rows = [x[i % len(x)].tolist() for i in range(301)]
    rows[300][field] = value
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    before = _head(run_dir)
    with pytest.raises(RequestError, match=reason):
        serve_sim(run_dir, inputs=path, batch_size=256, draw=False, log=None)
    assert not (run_dir / FOLDER).exists() and _head(run_dir) == before


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_text("[" * 100_000 + "]" * 100_000 + "\n"), "line 1 is not JSON this reader takes: nested too deeply"),
    (lambda p: p.write_text("[" + "9" * 400 + ", 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"),
     "line 1: field 0 is an integer of 400 digits, beyond the float32 range"),
    (None, "seed must be an integer >= 0, got -1"),
    (None, "requests must be an integer from 1 to 1,000,000 .*, got 1000000000000"),
])
def test_the_cli_refuses_what_it_cannot_serve_in_one_line_with_nothing_written(run_dir, tmp_path, capsys, make, reason):
    if make is not None:
        make(tmp_path / "requests.jsonl")
        options = ["--inputs", str(tmp_path / "requests.jsonl")]
    else:
        options = ["--seed", "-1"] if "seed" in reason else ["--requests", str(10**12)]
    before = _head(run_dir)
    assert main(["serve-sim", str(run_dir), *options]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.match(rf"datanet-lab: error: .*{reason}", err), err
    assert not (run_dir / FOLDER).exists() and _head(run_dir) == before


def test_a_file_of_more_inputs_than_a_sim_serves_is_refused(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(sim, "MAX_REQUESTS", 2)
    path = tmp_path / "requests.csv"
    pd.DataFrame(run_test_inputs(run_dir)[:3]).to_csv(path, index=False, header=False)
    with pytest.raises(ServingError, match=r"requests.csv: 3 inputs, more than the 2 a sim serves; give requests"):
        serve_sim(run_dir, inputs=path, draw=False, log=None)
    assert serve_sim(run_dir, inputs=path, requests=2, draw=False, log=None).requests == 2


def test_the_cli_serves_and_ledger_verify_receipt_accepts_a_proof_and_rejects_a_tampered_one(run_dir, tmp_path, capsys):
    assert main(["serve-sim", str(run_dir), "--requests", "50", "--batch-size", "20"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^serve-sim: 50 inferences in .* = [0-9,]+/s \(attribution", out, re.M)
    assert re.search(r"^dust: ", out, re.M)
    with InferenceEconomy(run_dir) as economy:
        document = economy.proof("req-0000000042")
    proof = tmp_path / "proof.json"
    proof.write_text(json.dumps(document))
    book = str(run_dir / "ledger.sqlite")  # the log key the checker chooses: the run's ledger's
    assert main(["ledger", "verify-receipt", str(proof), "--ledger", book]) == 0
    document["receipt"]["shares"] = {c: "0/1" for c in document["receipt"]["shares"]} | {"c00": "500/1"}
    proof.write_text(json.dumps(document))
    assert main(["ledger", "verify-receipt", str(proof), "--ledger", book]) == 1
    assert "wrong-root" in capsys.readouterr().out


@pytest.mark.slow
def test_every_receipt_of_a_longer_sim_is_provable(run_dir):
    serve_sim(run_dir, requests=3000, batch_size=256, draw=False, log=None)
    found = check_receipts(run_dir)
    assert found.ok and found.checked == found.total == 3000
