"""``datanet-lab ledger verify``: exit 0 on a sound ledger, 1 naming the first bad entry."""

import sqlite3

import pytest

import ledger
from datanet_lab.cli import main


@pytest.fixture
def ledger_file(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with ledger.Ledger(path, clock=ledger.fixed_clock()) as book:
        book.append_many([("contribution", f"c{i}", {"sample": i}) for i in range(5)])
    return path


def test_verify_ok(ledger_file, capsys):
    assert main(["ledger", "verify", str(ledger_file)]) == 0
    assert "ledger OK: 5 entries" in capsys.readouterr().out


def test_verify_names_the_first_tampered_entry(ledger_file, capsys):
    conn = sqlite3.connect(ledger_file)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("""UPDATE entries SET payload = '{"sample":99}' WHERE seq = 3""")
    conn.commit()
    conn.close()
    assert main(["ledger", "verify", str(ledger_file)]) == 1
    out = capsys.readouterr().out
    assert "INVALID at entry 3" in out and "hash mismatch" in out


def test_verify_missing_file(tmp_path, capsys):
    assert main(["ledger", "verify", str(tmp_path / "none.sqlite")]) == 2
    assert "no ledger file at" in capsys.readouterr().err
