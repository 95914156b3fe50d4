"""Read-only tools leave every file byte-identical and create none, and refuse what is not a ledger.

Each tool runs through ``python -m ledger.cli``'s ``main`` on a real ledger, a foreign SQLite
database, an empty file, a directory and a missing path; the SHA-256 of every file in the folder
and the folder's listing are compared before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ledger import Keystore, Ledger, LedgerError, fixed_clock, verify
from ledger.cli import main

TOOLS = {
    "verify": ["verify", "{path}"],
    "show": ["show", "{path}"],
    "show --kind": ["show", "{path}", "--kind", "contribution"],
    "export": ["export", "{path}", "--out", "{elsewhere}/export.jsonl"],
    "head": ["head", "{path}"],
    "prove": ["prove", "{path}", "--seq", "1"],
    "consistency": ["consistency", "{path}", "--old-size", "2"],
    "check-head": ["check-head", "{path}", "{elsewhere}/head.json", "--head", "{elsewhere}/head.json"],
}


def _state(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with the SHA-256 of its bytes ("dir" for a folder)."""
    return {str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def _write_ledger(path: Path, keys: Path) -> None:
    with Ledger(path, keystore=Keystore(keys, seed=b"read-only"), clock=fixed_clock()) as book:
        book.register("c0", "contributor")
        book.append_many([("contribution", "c0", {"sample_id": "s1"}), ("contribution", "c0", {"sample_id": "s2"})])
        book.append_many([("contribution", "c0", {"sample_id": "s3"})])


def _target(kind: str, folder: Path, tmp_path: Path) -> Path:
    path = folder / "ledger.sqlite"
    if kind == "ledger":
        _write_ledger(path, tmp_path / "keys")
    elif kind == "foreign database":
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('not a ledger')")
        conn.commit()
        conn.close()
    elif kind == "empty file":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    return path


EXPECTED_ERROR = {
    "foreign database": "is an SQLite database but not a ledger: none of its tables (notes)",
    "empty file": "is an empty file (0 bytes), not a ledger",
    "directory": "is a directory, not a ledger file",
    "missing path": "no ledger file at",
}


@pytest.mark.parametrize("tool", sorted(TOOLS))
@pytest.mark.parametrize("kind", ["ledger", "foreign database", "empty file", "directory", "missing path"])
def test_a_read_only_tool_changes_no_byte_and_creates_no_file(kind, tool, tmp_path, capsys):
    folder, elsewhere = tmp_path / "folder", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    path = _target(kind, folder, tmp_path)
    _write_ledger(elsewhere / "same.sqlite", tmp_path / "keys")  # the same entries, for a saved head
    with Ledger(elsewhere / "same.sqlite") as book:
        (elsewhere / "head.json").write_text(json.dumps({**book.signed_head(2).to_dict(), "log_public_key": book.log_public_key}))
    before = _state(folder)
    code = main([arg.format(path=path, elsewhere=elsewhere) for arg in TOOLS[tool]])
    out, err = capsys.readouterr()
    assert _state(folder) == before
    if kind == "ledger":
        assert code == 0, err
    else:
        assert code == 2
        assert str(path) in err and EXPECTED_ERROR[kind] in err, err
        assert "Traceback" not in err
        assert not (elsewhere / "export.jsonl").exists()


def test_a_ledger_with_dropped_triggers_is_read_without_restoring_them(tmp_path):
    path = _target("ledger", tmp_path, tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.close()
    before = _state(tmp_path)
    assert verify(path).ok
    with Ledger(path) as book:
        assert len(book) == 3
    assert _state(tmp_path) == before
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert not conn.execute("SELECT name FROM sqlite_master WHERE name = 'entries_no_update'").fetchall()
    conn.close()


def test_a_ledger_with_a_live_writer_verifies_with_its_uncheckpointed_entries(tmp_path):
    """A writer attached: its -wal and -shm files are read as they are. The main file, the -wal
    file and the listing stay as they were; only SQLite's shared-memory index (-shm) may be
    touched by the read lock."""
    path = tmp_path / "ledger.sqlite"
    with Ledger(path, keystore=Keystore(tmp_path / "keys", seed=b"live"), clock=fixed_clock()) as writer:
        writer.register("c0", "contributor")
        writer.append_many([("contribution", "c0", {"sample_id": f"s{i}"}) for i in range(5)])
        assert Path(f"{path}-wal").stat().st_size > 0
        before = _state(tmp_path)
        report = verify(path)
        with Ledger(path) as reader:
            assert len(reader) == 5
        after = _state(tmp_path)
        assert report.ok and report.entries == 5
        assert after.keys() == before.keys()
        assert {k: v for k, v in after.items() if not k.endswith("-shm")} == {k: v for k, v in before.items() if not k.endswith("-shm")}
        writer.append("contribution", "c0", {"sample_id": "s5"})  # the writer goes on
    assert verify(path).entries == 6


def test_the_files_a_killed_writer_left_are_read_and_left_byte_identical(tmp_path):
    """A writer killed (SIGKILL) with entries only in its -wal: every read-only tool reads them
    and rewrites nothing, not even the -shm index the writer left."""
    path = tmp_path / "ledger.sqlite"
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from ledger import Keystore, Ledger, fixed_clock\n"
        f"book = Ledger({str(path)!r}, keystore=Keystore({str(tmp_path / 'keys')!r}, seed=b'killed'), clock=fixed_clock())\n"
        "book.register('c0', 'contributor')\n"
        "for i in range(3):\n    book.append_many([('contribution', 'c0', {'sample_id': f's{i}-{k}'}) for k in range(4)])\n"
        "print('appended', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "appended\n"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert {p.name for p in tmp_path.iterdir()} >= {"ledger.sqlite-wal", "ledger.sqlite-shm"}
    before = _state(tmp_path)
    report = verify(path)
    assert report.ok and report.entries == 12, report
    for tool in ("show", "head", "prove"):
        args = [arg.format(path=path, elsewhere=tmp_path) for arg in TOOLS[tool]]
        assert main(args) == 0
    with Ledger(path) as book:
        assert len(book) == 12
    assert _state(tmp_path) == before


def test_a_writer_that_checkpoints_while_a_reader_reads_is_detected(tmp_path):
    path = tmp_path / "ledger.sqlite"
    _write_ledger(path, tmp_path / "keys")
    reader = Ledger(path)  # no -wal file: read as an immutable snapshot
    with Ledger(path, keystore=Keystore(tmp_path / "keys", seed=b"read-only"), clock=fixed_clock()) as writer:
        writer.append("contribution", "c0", {"sample_id": "s4"})
    with pytest.raises(LedgerError, match="changed by a writer while it was read"):
        reader.close()


def test_a_reader_of_a_path_with_odd_characters(tmp_path):
    folder = tmp_path / "a dir?#%x"
    folder.mkdir()
    path = folder / "led ger?.sqlite"
    _write_ledger(path, tmp_path / "keys")
    before = _state(folder)
    assert verify(path).ok
    assert _state(folder) == before


def test_a_writer_refuses_what_is_not_a_ledger_and_changes_nothing(tmp_path):
    keys = Keystore(tmp_path / "keys", seed=b"w")
    for kind in ("foreign database", "directory"):
        folder = tmp_path / kind.replace(" ", "-")
        folder.mkdir()
        path = _target(kind, folder, tmp_path)
        before = _state(folder)
        with pytest.raises(LedgerError, match=EXPECTED_ERROR[kind].split(":")[0]):
            Ledger(path, keystore=keys)
        assert _state(folder) == before
    text = tmp_path / "notes.txt"
    text.write_text("plain text\n")
    with pytest.raises(LedgerError, match="notes.txt is not an SQLite database"):
        Ledger(text, keystore=keys)
    assert text.read_text() == "plain text\n"
