"""Tamper fuzz: 1,000 random tamperings of a ledger file and 1,000 of its export, all detected.

Each tampering is what an attacker holding the file (but not the private keys) can do: change a
payload byte, a hash, a signature or a public key, swap two entries, delete one, insert a forged
one (hashed and chained correctly, signed with the attacker's own key), truncate the tail after a
signed head, or edit a signed head or a stored Merkle node. Every one must make verification fail
with a reason (or, for an export line that no longer parses, be refused naming the line).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import random
import re
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from ledger import Keystore, Ledger, LedgerError, epoch_records, fixed_clock, plan_epoch, verify
from ledger.export import export

N_TAMPERINGS = 1000
ATTACKER = SigningKey(b"\x07" * 32)


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    """A ledger of stakes, contributions in several batches and one payout epoch (35 entries, 6 heads)."""
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "ledger.db"
    actors = [f"c{i}" for i in range(4)]
    with Ledger(path, keystore=Keystore(folder / "keys", seed=b"fuzz"), clock=fixed_clock()) as book:
        for actor in actors:
            book.register(actor, "contributor")
        book.register("pa", "payout-authority")
        book.append_many([("stake", c, {"contributor": c, "amount": 100}) for c in actors])
        for batch in range(4):
            book.append_many([("contribution", c, {"sample_id": f"{c}-{batch}-{k}", "v": k * 0.5}) for c in actors for k in range(2)])
        credit = {"c0": 2.0, "c1": 1.0, "c2": -1.0, "c3": 0.5}
        plan = plan_epoch(1, 1000, credit, {c: abs(v) for c, v in credit.items()}, {c: 100 for c in actors},
                          {c: 2 for c in actors}, {"c0": 0, "c1": 1, "c2": 0, "c3": 0})
        book.append_many(epoch_records(plan, "pa"))
    assert verify(path).ok
    return path


def _flip_hex(text: str, rng: random.Random) -> str:
    i = rng.randrange(len(text))
    return text[:i] + rng.choice([c for c in "0123456789abcdef" if c != text[i]]) + text[i + 1 :]


def _flip_char(text: str, rng: random.Random) -> str:
    i = rng.randrange(len(text))
    return text[:i] + rng.choice([c for c in 'abc019"{}:, ' if c != text[i]]) + text[i + 1 :]


def _forged_row(rows: list[tuple], rng: random.Random) -> tuple:
    """A new last entry chained and hashed correctly, signed by the attacker's key."""
    from ledger.encoding import entry_bytes, statement_bytes

    seq, prev = len(rows) + 1, rows[-1][7]
    actor, payload = rng.choice(["c0", "pa"]), json.dumps({"forged": rng.randrange(10**6)}, separators=(",", ":"))
    signature = ATTACKER.sign(statement_bytes("payout", actor, payload)).signature.hex()
    raw = entry_bytes(seq, "payout", actor, "1970-01-01T00:00:00+00:00", payload, prev, signature)
    return (seq, "payout", actor, "1970-01-01T00:00:00+00:00", payload, prev, signature, hashlib.sha256(raw).hexdigest())


def _tamper_sqlite(path: Path, rng: random.Random) -> str:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")  # a scratch copy: skip the fsyncs, 1,000 times
    conn.execute("BEGIN")
    for (trigger,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {trigger}")
    rows = conn.execute("SELECT seq, kind, actor, timestamp, payload, prev_hash, signature, hash FROM entries ORDER BY seq").fetchall()
    heads = [s for (s,) in conn.execute("SELECT size FROM heads ORDER BY size")]
    kind = rng.choice(["payload", "hash", "signature", "swap", "delete", "forge", "truncate", "key", "head", "node"])
    seq = rng.randrange(1, len(rows) + 1)
    column = {"payload": 4, "hash": 7, "signature": 6}.get(kind)
    if column is not None:
        flip = _flip_char if kind == "payload" else _flip_hex
        conn.execute(f"UPDATE entries SET {kind} = ? WHERE seq = ?", (flip(rows[seq - 1][column], rng), seq))
    elif kind == "swap":
        a, b = rng.sample(range(1, len(rows) + 1), 2)
        for old, new in ((a, -1), (b, a), (-1, b)):
            conn.execute("UPDATE entries SET seq = ? WHERE seq = ?", (new, old))
    elif kind == "delete":
        conn.execute("DELETE FROM entries WHERE seq = ?", (seq,))
    elif kind == "forge":
        conn.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _forged_row(rows, rng))
    elif kind == "truncate":
        conn.execute("DELETE FROM entries WHERE seq > ?", (rng.choice(heads[:-1]),))
    elif kind == "key":
        actor = rng.choice(["c0", "c1", "c2", "c3", "pa", "log"])
        conn.execute("UPDATE keys SET public_key = ? WHERE actor = ?", (_flip_hex("0" * 64, rng), actor))
    elif kind == "head":
        field = rng.choice(["root", "signature", "timestamp"])
        value = conn.execute(f"SELECT {field} FROM heads WHERE size = ?", (rng.choice(heads),)).fetchone()[0]
        conn.execute(f"UPDATE heads SET {field} = ? WHERE {field} = ?", (_flip_hex(value, rng) if field != "timestamp" else "2000", value))
    else:
        node = rng.choice([i for (i,) in conn.execute("SELECT id FROM tree")])
        conn.execute("UPDATE tree SET hash = ? WHERE id = ?", (rng.randbytes(32), node))
    conn.execute("COMMIT")
    conn.close()
    return kind


def _tamper_export(lines: list[dict], rng: random.Random) -> tuple[str, list[dict]]:
    lines = json.loads(json.dumps(lines))
    entries = [i for i, x in enumerate(lines) if x["type"] == "entry"]
    heads = [x["size"] for x in lines if x["type"] == "head"]
    kind = rng.choice(["payload", "hash", "signature", "swap", "delete", "forge", "truncate", "key", "log-key", "head"])
    i = rng.choice(entries)
    if kind == "payload":
        payload = lines[i]["payload"]
        name = rng.choice(sorted(payload))
        payload[name] = payload[name] + 1 if isinstance(payload[name], (int, float)) else _flip_char(str(payload[name]), rng)
    elif kind in ("hash", "signature"):
        lines[i][kind] = _flip_hex(lines[i][kind], rng)
    elif kind == "swap":
        a, b = rng.sample(entries, 2)
        lines[a], lines[b] = lines[b], lines[a]
    elif kind == "delete":
        del lines[i]
    elif kind == "forge":
        rows = [tuple(lines[j][f] for f in ("seq", "kind", "actor", "timestamp", "payload", "prev_hash", "signature", "hash")) for j in entries]
        forged = _forged_row(rows, rng)
        lines.insert(entries[-1] + 1, {"type": "entry", **dict(zip(("seq", "kind", "actor", "timestamp", "payload", "prev_hash", "signature", "hash"), forged)), "payload": json.loads(forged[4])})
    elif kind == "truncate":
        keep = rng.choice(heads[:-1])
        lines = [x for x in lines if not (x["type"] == "entry" and x["seq"] > keep)]
    elif kind == "key":
        key = rng.choice([x for x in lines if x["type"] == "key"])
        key["public_key"] = _flip_hex(key["public_key"], rng)
    elif kind == "log-key":
        lines[0]["log_public_key"] = _flip_hex(lines[0]["log_public_key"], rng)
    else:
        head = rng.choice([x for x in lines if x["type"] == "head"])
        head["root"] = _flip_hex(head["root"], rng)
    return kind, lines


def _detected(path: Path) -> str | None:
    """The reason verification gives, or None when the tampered file passes."""
    try:
        report = verify(path)
    except LedgerError as exc:
        return str(exc)
    return None if report.ok else report.reason


@pytest.mark.slow
def test_every_tampering_of_a_ledger_file_is_detected(original, tmp_path):
    rng, kinds, missed = random.Random(1), Counter(), []
    copy = tmp_path / "copy.db"
    for trial in range(N_TAMPERINGS):
        shutil.copyfile(original, copy)
        kind = _tamper_sqlite(copy, rng)
        kinds[kind] += 1
        if not _detected(copy):
            missed.append((trial, kind))
    assert not missed, missed[:10]
    assert sum(kinds.values()) == N_TAMPERINGS and len(kinds) == 10


@pytest.mark.slow
def test_every_tampering_of_an_export_is_detected(original, tmp_path):
    out = tmp_path / "export.jsonl"
    with Ledger(original) as book:
        export(book, out)
    assert verify(out).ok
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    rng, kinds, missed = random.Random(2), Counter(), []
    for trial in range(N_TAMPERINGS):
        kind, tampered = _tamper_export(lines, rng)
        kinds[kind] += 1
        out.write_text("".join(json.dumps(x) + "\n" for x in tampered))
        if not _detected(out):
            missed.append((trial, kind))
    assert not missed, missed[:10]
    assert sum(kinds.values()) == N_TAMPERINGS and len(kinds) == 10


# --- damage below the rows: SQLite pages and indexes ----------------------------------------------


def _tables(path: Path) -> dict[str, list[tuple]]:
    """Every row of the ledger's tables, read through sqlite3 directly."""
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} NOT INDEXED ORDER BY rowid").fetchall() for t in ("entries", "heads", "keys", "meta", "tree")}
    finally:
        conn.close()


def _flip_in_index(path: Path, index: str, needle: bytes) -> None:
    """Change one byte of ``needle`` where it is stored in ``index``'s pages (not in the table)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    pages = [p for (p,) in conn.execute("SELECT pageno FROM dbstat WHERE name = ?", (index,))]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = bytearray(path.read_bytes())
    for page in pages:
        at = data.find(needle, (page - 1) * page_size, page * page_size)
        if at >= 0:
            data[at + len(needle) - 1] ^= 0x01  # 'payout_epoch' -> 'payout_epoci'
            path.write_bytes(bytes(data))
            return
    raise AssertionError(f"{needle!r} not found in index {index}")


@pytest.mark.parametrize("background", [False, True])
def test_a_one_byte_corruption_of_an_index_is_found_and_stops_writers(original, tmp_path, capsys, monkeypatch, background):
    from ledger.cli import main

    path = tmp_path / "ledger.db"
    shutil.copyfile(original, path)
    _flip_in_index(path, "entries_kind", b"payout_epoch")
    if background:  # the integrity check a forked process runs for large files
        monkeypatch.setattr(importlib.import_module("ledger.verify"), "BACKGROUND_CHECK_FROM", 0)
    report = verify(path, workers=2)
    assert not report.ok and "SQLite integrity check" in report.reason and "entries_kind" in report.reason
    with Ledger(original) as book:
        (closing,) = book.entries("payout_epoch")
    assert report.first_bad_seq == closing.seq and f"entry {closing.seq}:" in report.reason  # its index row
    # Readers never go through the damaged index: the epoch entry is still shown.
    assert main(["show", str(path), "--kind", "payout_epoch"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    # A writer refuses the file, so epoch 1 cannot be paid again behind the damaged index.
    with pytest.raises(LedgerError, match="fails SQLite's integrity check"):
        Ledger(path, keystore=Keystore(original.parent / "keys", seed=b"fuzz"))


N_DAMAGES = 300


def test_byte_flips_and_truncations_are_found_and_located(original, tmp_path):
    """A flipped bit or a cut-off file either leaves every row as it was (a flip in unused space)
    or fails verification naming the entry, row, table, index or page; never a traceback."""
    rng, data, rows = random.Random(5), original.read_bytes(), _tables(original)
    copy, outcomes, unlocated = tmp_path / "copy.db", Counter(), []
    for trial in range(N_DAMAGES):
        damaged = bytearray(data)
        if trial % 3 == 0:
            del damaged[rng.randrange(len(damaged)):]
        else:
            damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        copy.write_bytes(bytes(damaged))
        try:
            report = verify(copy)
        except LedgerError as exc:  # the schema no longer names the ledger's tables
            outcomes["refused"] += 1
            assert str(copy) in str(exc)
            continue
        if report.ok:
            outcomes["unchanged"] += 1
            assert _tables(copy) == rows, f"trial {trial}: rows changed but the ledger verifies"
            continue
        outcomes["invalid"] += 1
        if report.first_bad_seq is None and not re.search(r"pages? \d+|page\(s\)|table \w+|index \w+|freelist|header|truncated", report.reason):
            unlocated.append((trial, report.reason))
    assert not unlocated, unlocated[:5]
    assert outcomes["invalid"] > N_DAMAGES / 3, outcomes


# --- exports that JSON readers could read two ways ----------------------------------------------


@pytest.fixture
def export_lines(original, tmp_path) -> list[str]:
    out = tmp_path / "export.jsonl"
    with Ledger(original) as book:
        export(book, out)
    assert verify(out).ok
    return out.read_text().splitlines()


def test_an_export_with_a_key_twice_in_one_object_is_refused(export_lines, tmp_path):
    number, line = next((i, x) for i, x in enumerate(export_lines, 1) if '"kind": "payout"' in x)
    # The payout's amount, written twice: a reader keeping the last value would see 10**15.
    assert '"amount": ' in line
    export_lines[number - 1] = line.replace('"amount": ', '"amount": 1000000000000000, "amount": ', 1)
    out = tmp_path / "dup.jsonl"
    out.write_text("\n".join(export_lines) + "\n")
    with pytest.raises(LedgerError, match=rf"dup.jsonl:{number}: .*key\(s\) \['amount'\] appear twice"):
        verify(out)


def test_an_export_with_a_conflicting_key_line_before_the_real_one_is_refused(export_lines, tmp_path):
    real = next(i for i, x in enumerate(export_lines) if '"type": "key"' in x and '"actor": "pa"' in x)
    forged = json.loads(export_lines[real])
    forged["public_key"] = ATTACKER.verify_key.encode().hex()
    export_lines.insert(real, json.dumps(forged))
    out = tmp_path / "keys.jsonl"
    out.write_text("\n".join(export_lines) + "\n")
    with pytest.raises(LedgerError, match=rf"keys.jsonl:{real + 2}: a second key line for actor 'pa' \(the first is line {real + 1}\)"):
        verify(out)
