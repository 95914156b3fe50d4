"""Appends from real OS processes: concurrent writers, and ``kill -9`` at random moments.

``LEDGER_KILL_TRIALS`` sets the number of kill trials (default 20 under ``make test``; the
full 100 run with ``LEDGER_KILL_TRIALS=100 .venv/bin/pytest tests/ledger/test_processes.py``).
The concurrency test puts its ledger on /dev/shm when there is one: there ``fsync`` is free, so
8,000 one-entry transactions take seconds instead of a minute of disk flushes; the locking and
the transaction code paths are the same (``synchronous=FULL`` is still set).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ledger import Keystore, Ledger, verify

pytestmark = pytest.mark.slow  # real OS processes: 8,000 transactions, then kill -9 trials

KILL_TRIALS = int(os.environ.get("LEDGER_KILL_TRIALS", "20"))
SEED = b"processes"

# A child process: append N entries as ACTOR, one per transaction or in small batches, and print
# "seq hash" for every entry of every append that returned.
APPENDER = """
import os, sys
from ledger import Keystore, Ledger
path, keys, actor, n, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
with Ledger(path, keystore=Keystore(keys, seed=%r)) as book:
    i = 0
    while n < 0 or i < n:
        size = 1 + i %% batch
        for e in book.append_many([("contribution", actor, {"sample_id": f"{actor}-{i + k}", "i": i + k, "pid": os.getpid()}) for k in range(size)]):
            sys.stdout.write(f"{e.seq} {e.hash}\\n")
        sys.stdout.flush()
        i += size
""" % SEED


def _prepare(path: Path, keys: Path, actors: list[str]) -> None:
    with Ledger(path, keystore=Keystore(keys, seed=SEED)) as book:
        for actor in actors:
            book.register(actor, "contributor")


def _spawn(path: Path, keys: Path, actor: str, n: int, batch: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", APPENDER, str(path), str(keys), actor, str(n), str(batch)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_eight_processes_append_1000_entries_each(tmp_path):
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else tmp_path) as folder:
        path, keys = Path(folder) / "ledger.db", tmp_path / "keys"
        actors = [f"w{i}" for i in range(8)]
        _prepare(path, keys, actors)
        children = [_spawn(path, keys, actor, 1000, 1) for actor in actors]
        outputs = [child.communicate(timeout=300) for child in children]
        for child, (_, err) in zip(children, outputs):
            assert child.returncode == 0, err
        returned = {int(line.split()[0]) for out, _ in outputs for line in out.splitlines()}
        assert returned == set(range(1, 8001))
        report = verify(path)
        assert report.ok and report.entries == 8000, report
        with Ledger(path) as book:
            by_actor = {a: [e.payload["i"] for e in book.entries(actor=a)] for a in actors}
            assert len(book.heads()) == 8000  # one signed head per transaction
        assert all(values == list(range(1000)) for values in by_actor.values())


def test_kill_9_at_random_moments_loses_no_returned_append(tmp_path):
    path, keys = tmp_path / "ledger.db", tmp_path / "keys"
    _prepare(path, keys, ["writer"])
    rng = random.Random(9)
    returned: dict[int, str] = {}
    for trial in range(KILL_TRIALS):
        child = _spawn(path, keys, "writer", -1, 1 + trial % 7)
        first = child.stdout.readline()  # appending has begun
        assert first, child.stderr.read()
        time.sleep(rng.uniform(0.0, 0.15))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        assert child.returncode == -signal.SIGKILL
        for line in (first + out).splitlines():
            seq, digest = line.split()
            returned[int(seq)] = digest
        report = verify(path)
        assert report.ok, f"trial {trial}: {report}"
    with Ledger(path) as book:
        stored = {e.seq: e.hash for e in book.entries()}
    missing = {s for s in returned if stored.get(s) != returned[s]}
    assert not missing, f"returned appends lost or changed: {sorted(missing)[:10]}"
    assert len(returned) >= KILL_TRIALS
