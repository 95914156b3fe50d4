"""``datanet-lab ledger ...``: verify (0 OK / 1 naming the first bad entry / 2 missing file),
show, export + offline verify, prove / verify-proof, consistency, head / check-head."""

import json
import sqlite3
import subprocess
import sys

import pytest

import ledger
from datanet_lab.cli import main
from ledger.keys import public_hex


@pytest.fixture
def ledger_file(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with ledger.Ledger(path, keystore=ledger.Keystore(tmp_path / "keys", seed=b"cli"), clock=ledger.fixed_clock()) as book:
        for i in range(5):
            book.register(f"c{i}", "contributor")
        book.append_many([("contribution", f"c{i}", {"sample_id": f"s{i}"}) for i in range(3)])
        book.append_many([("contribution", f"c{i}", {"sample_id": f"s{i}"}) for i in range(3, 5)])
    return path


def test_verify_ok(ledger_file, capsys):
    assert main(["ledger", "verify", str(ledger_file)]) == 0
    assert "ledger OK: 5 entries" in capsys.readouterr().out


def test_verify_names_the_first_tampered_entry(ledger_file, capsys):
    conn = sqlite3.connect(ledger_file)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("""UPDATE entries SET payload = '{"sample_id":"s99"}' WHERE seq = 3""")
    conn.commit()
    conn.close()
    assert main(["ledger", "verify", str(ledger_file)]) == 1
    out = capsys.readouterr().out
    assert "INVALID at entry 3" in out and "hash mismatch" in out


def test_verify_missing_file(tmp_path, capsys):
    assert main(["ledger", "verify", str(tmp_path / "none.sqlite")]) == 2
    assert "no ledger file at" in capsys.readouterr().err


def test_show_filters_by_kind_and_actor(ledger_file, capsys):
    assert main(["ledger", "show", str(ledger_file), "--actor", "c3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["seq", "kind", "actor", "timestamp", "payload"]
    assert len(lines) == 2 and lines[1].split()[:3] == ["4", "contribution", "c3"]
    assert main(["ledger", "show", str(ledger_file), "--kind", "payout"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_export_verifies_offline_and_a_tampered_export_fails(ledger_file, tmp_path, capsys):
    out = tmp_path / "export.jsonl"
    assert main(["ledger", "export", str(ledger_file), "--out", str(out)]) == 0
    assert main(["ledger", "verify", str(out)]) == 0
    assert "ledger OK: 5 entries" in capsys.readouterr().out
    lines = out.read_text().splitlines()
    assert json.loads(lines[0])["type"] == "log" and sum('"type": "key"' in x for x in lines) == 6  # 5 actors + log
    out.write_text("\n".join(x.replace('"sample_id": "s2"', '"sample_id": "s7"') for x in lines) + "\n")
    assert main(["ledger", "verify", str(out)]) == 1
    assert "INVALID at entry 3" in capsys.readouterr().out


def test_prove_and_verify_proof(ledger_file, tmp_path, capsys):
    proof = tmp_path / "proof.json"
    assert main(["ledger", "prove", str(ledger_file), "--seq", "2", "--out", str(proof)]) == 0
    assert main(["ledger", "verify-proof", str(proof), "--ledger", str(ledger_file)]) == 0
    assert "OK (included): entry 2" in capsys.readouterr().out
    doc = json.loads(proof.read_text())
    assert len(doc["proof"]) == 3  # ceil(log2 5)
    doc["entry"]["payload"]["sample_id"] = "s9"
    proof.write_text(json.dumps(doc))
    assert main(["ledger", "verify-proof", str(proof), "--ledger", str(ledger_file)]) == 1
    assert "FAILED (bad-entry)" in capsys.readouterr().out
    assert main(["ledger", "verify-proof", str(tmp_path / "nope.json"), "--ledger", str(ledger_file)]) == 2


def test_consistency_between_two_heads(ledger_file, tmp_path, capsys):
    proof = tmp_path / "consistency.json"
    assert main(["ledger", "consistency", str(ledger_file), "--old-size", "3", "--out", str(proof)]) == 0
    assert main(["ledger", "verify-proof", str(proof), "--ledger", str(ledger_file)]) == 0
    assert "OK (consistent)" in capsys.readouterr().out
    assert main(["ledger", "consistency", str(ledger_file), "--old-size", "4"]) == 2  # no head of size 4 was signed
    assert "no signed tree head of size 4" in capsys.readouterr().err


def test_check_head_extends_rollback_and_equivocation(ledger_file, tmp_path, capsys):
    head = tmp_path / "head.json"
    key = ledger.Keystore(tmp_path / "keys", seed=b"cli").key("log")
    log_key = public_hex(key)
    assert main(["ledger", "head", str(ledger_file), "--size", "3", "--out", str(head)]) == 0
    assert main(["ledger", "check-head", str(ledger_file), str(head), "--log-key", log_key]) == 0
    assert "OK (extends)" in capsys.readouterr().out
    saved = json.loads(head.read_text())
    # Equivocation: a head of size 3 with another root, validly signed with the log's key.
    from ledger.encoding import head_bytes
    forged = {**saved, "root": "ab" * 32}
    forged["signature"] = key.sign(head_bytes(3, forged["root"], saved["timestamp"])).signature.hex()
    head.write_text(json.dumps(forged))
    assert main(["ledger", "check-head", str(ledger_file), str(head), "--log-key", log_key]) == 1
    assert "FAILED (equivocation)" in capsys.readouterr().out
    # Rollback: a signed head larger than the log.
    big = {**saved, "size": 9}
    big["signature"] = key.sign(head_bytes(9, saved["root"], saved["timestamp"])).signature.hex()
    head.write_text(json.dumps(big))
    assert main(["ledger", "check-head", str(ledger_file), str(head), "--log-key", log_key]) == 1
    assert "FAILED (rollback)" in capsys.readouterr().out


def test_the_ledger_tools_run_without_the_ml_stack(ledger_file):
    code = ("import sys, runpy; sys.modules.update(torch=None, numpy=None, pandas=None); "
            f"sys.argv = ['ledger', 'verify', {str(ledger_file)!r}]; runpy.run_module('ledger.cli', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "ledger OK: 5 entries" in done.stdout


@pytest.mark.parametrize("tool, value, message", [
    ("prove", "100000000000000000000", "has no entry 100000000000000000000: its entries are numbered 1 to 5"),
    ("prove", "-1", "has no entry -1"),
    ("prove", "0", "has no entry 0"),
    ("prove", "6", "has no entry 6"),
    ("consistency", "100000000000000000000", "no signed tree head of size 100000000000000000000"),
    ("consistency", "-3", "no signed tree head of size -3"),
    ("head", "100000000000000000000", "no signed tree head of size 100000000000000000000"),
])
def test_a_number_out_of_range_is_a_clear_error(ledger_file, capsys, tool, value, message):
    option = {"prove": "--seq", "consistency": "--old-size", "head": "--size"}[tool]
    assert main(["ledger", tool, str(ledger_file), option, value]) == 2
    err = capsys.readouterr().err
    assert message in err and str(ledger_file) in err and "Traceback" not in err


def test_out_that_cannot_be_written_is_a_clear_error(ledger_file, tmp_path, capsys):
    assert main(["ledger", "prove", str(ledger_file), "--seq", "1", "--out", str(tmp_path / "no" / "such" / "p.json")]) == 2
    assert "cannot write --out" in capsys.readouterr().err
    assert main(["ledger", "export", str(ledger_file), "--out", str(tmp_path)]) == 2
    assert "cannot write the export" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys", "ledger.sqlite"]  # no partial file left
    before = ledger_file.read_bytes()
    assert main(["ledger", "export", str(ledger_file), "--out", str(ledger_file)]) == 2
    assert "is the ledger itself" in capsys.readouterr().err and ledger_file.read_bytes() == before


@pytest.mark.parametrize("args", [["--help"], ["verify", "{path}"]])
def test_datanet_lab_ledger_imports_no_ml_stack(ledger_file, args):
    argv = ["ledger", *(a.format(path=ledger_file) for a in args)]
    code = ("import sys; from datanet_lab.cli import main\n"
            f"try:\n    code = main({argv!r})\nexcept SystemExit as done:\n    code = done.code\n"
            "print(sorted(m for m in ('torch', 'pandas', 'numpy', 'transformers') if m in sys.modules)); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]", done.stdout


def test_an_export_with_a_deeply_nested_payload_is_one_error_line(ledger_file, tmp_path, capsys):
    out = tmp_path / "export.jsonl"
    assert main(["ledger", "export", str(ledger_file), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    number = next(i for i, line in enumerate(lines, 1) if '"type": "entry"' in line)
    deep = "[" * 100_000 + "]" * 100_000
    lines[number - 1] = lines[number - 1].replace('{"sample_id": "s0"}', deep)
    out.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["ledger", "verify", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out}:{number}: unreadable export line: JSON nested too deeply" in err, err


def test_a_ledger_entry_with_a_deeply_nested_payload_is_reported(ledger_file, capsys):
    conn = sqlite3.connect(ledger_file)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET payload = ? WHERE seq = 2", ("[" * 100_000 + "]" * 100_000,))
    conn.commit()
    conn.close()
    assert main(["ledger", "verify", str(ledger_file)]) == 1
    assert "INVALID at entry 2: payload is not valid JSON: nested too deeply" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_receipt_proof_turns_a_served_receipt_into_a_document_verify_receipt_checks(tmp_path, tiny_params, capsys):
    """serve-sim on a tiny run, then the command line alone: receipt-proof, verify-receipt."""
    from datanet_lab import pipeline

    run = pipeline.open_run(str(tmp_path / "runs"), **tiny_params)
    pipeline.attribute(run)
    assert main(["serve-sim", str(run.directory), "--requests", "40", "--batch-size", "16"]) == 0
    inference, book, proof = run.directory / "inference", run.directory / "ledger.sqlite", tmp_path / "r.json"
    assert main(["ledger", "verify", str(book)]) == 0  # every entry signed by a role entitled to its kind
    capsys.readouterr()
    assert main(["ledger", "receipt-proof", str(inference), "req-0000000021", "-o", str(proof)]) == 0
    doc = json.loads(proof.read_text())
    assert (doc["receipt"]["request_id"], doc["receipt"]["batch_id"], doc["index"]) == ("req-0000000021", "batch-00000001", 5)
    assert main(["ledger", "verify-receipt", str(proof), "--ledger", str(book)]) == 0
    assert "OK (included): receipt 5 of batch 'batch-00000001' (request 'req-0000000021')" in capsys.readouterr().out
    doc["receipt"]["fee"] += 1
    proof.write_text(json.dumps(doc))
    assert main(["ledger", "verify-receipt", str(proof), "--ledger", str(book)]) == 1
    assert main(["ledger", "verify-receipt", str(proof)]) == 2
    capsys.readouterr()
    for args, message in [(["req-0000000099"], "no receipt has request id 'req-0000000099'"),
                          (["req-0000000021", "--ledger", str(tmp_path)], "is a directory, not a ledger file")]:
        assert main(["ledger", "receipt-proof", str(inference), *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert main(["ledger", "receipt-proof", str(run.directory), "req-0000000021"]) == 2
    assert f"{run.directory} holds no receipts.jsonl" in capsys.readouterr().err
