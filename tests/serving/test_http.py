"""The HTTP server of payable inference, over a real socket: uvicorn in a subprocess, httpx clients.

Every receipt id a client gets is proven (``GET /receipts/{id}``, checked offline against the
log key derived from the run's keystore), bad requests get a 4xx naming the field and row and
change nothing, and after ``kill -9`` under load every acknowledged receipt is still provable.
The group commit's batching is checked in-process against a recording handler.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from fractions import Fraction
from pathlib import Path

import httpx
import numpy as np
import pytest

import ledger
from datanet_lab import cli, pipeline
from datanet_lab.serving import QueryAttributor, RequestError, run_test_inputs
from datanet_lab.serving.economy import check_receipts
from datanet_lab.serving.app import MAX_BODY_BYTES, MAX_ROWS, TIMING_PHASES, Answered, create_app
from datanet_lab.serving.requests import check_input
from datanet_lab.serving.server import GroupCommit, ServerStopped, main
from ledger.keys import public_hex
from ledger.store import LOG_ACTOR
from ledger.receipts import check_receipt
from tests.serving.harness import Launched
from tests.serving.load import canned, canned_answer, post, run_load

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_params) -> pipeline.Run:
    made = pipeline.open_run(str(tmp_path_factory.mktemp("served")), **tiny_params)
    pipeline.attribute(made)
    return made


@pytest.fixture(scope="module")
def server(run, tmp_path_factory) -> Iterator[Launched]:
    with Launched(run.directory, tmp_path_factory.mktemp("log") / "server.log", "--batch-size", "8", "--max-wait-ms",
                "20") as served:
        yield served
        assert served.stop() == 0, served.log.read_text()


def log_key(run: pipeline.Run) -> str:
    """The log's public key, from the run's keystore (not from the server)."""
    return public_hex(run.keystore().key(LOG_ACTOR))


def assert_provable(client: httpx.Client, receipt_id: str, key: str) -> dict:
    answer = client.get(f"/receipts/{receipt_id}")
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["receipt"]["request_id"] == receipt_id
    result = check_receipt(doc, key)
    assert result.ok, (receipt_id, result)
    return doc


def test_a_single_client_gets_predictions_and_provable_receipts(run, server):
    x = run_test_inputs(run)[:3]
    before = server.head()["size"]
    answer = server.client.post("/infer", json={"inputs": x.tolist()})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    expected = QueryAttributor.from_run(run).predict(x)[0]
    assert [r["prediction"] for r in results] == expected.tolist()
    assert server.head()["size"] == before + 1  # one micro-batch, one receipt_batch entry
    for row, result in zip(x, results):
        doc = assert_provable(server.client, result["receipt_id"], log_key(run))
        assert doc["receipt"]["input_hash"] == hashlib.sha256(np.asarray(row, "<f8").tobytes()).hexdigest()
        assert {k: doc["receipt"][k] for k in ("fee", "fee_split", "shares")} == {
            k: result[k] for k in ("fee", "fee_split", "shares")}
    one = server.client.post("/infer", json={"input": x[0].tolist()}).raise_for_status().json()["results"]
    assert len(one) == 1 and one[0]["prediction"] == expected[0]
    assert_provable(server.client, one[0]["receipt_id"], log_key(run))
    assert server.head()["log_public_key"] == log_key(run)


def test_concurrent_clients_are_grouped_into_batches_and_every_receipt_is_provable(run, server):
    x = run_test_inputs(run)
    earnings_before = server.client.get("/earnings").raise_for_status().json()
    results, errors = [], []

    def client(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as own:
            for k in range(8):
                rows = np.take(x, range(worker * 8 + k, worker * 8 + k + 1 + k % 2), axis=0, mode="wrap")
                answer = own.post("/infer", json={"inputs": rows.tolist()})
                if answer.status_code != 200:
                    errors.append(answer.text)
                    continue
                results.extend(answer.json()["results"])

    threads = [threading.Thread(target=client, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    ids = [r["receipt_id"] for r in results]
    assert len(ids) == len(set(ids)) == 6 * 8 * 3 // 2
    assert len({r["batch_id"] for r in results}) < 6 * 8  # requests shared commits
    for receipt_id in ids:
        assert_provable(server.client, receipt_id, log_key(run))
    earnings = server.client.get("/earnings").raise_for_status().json()
    for role in earnings["by_role"]:
        assert earnings["by_role"][role] - earnings_before["by_role"].get(role, 0) == sum(r["fee_split"][role] for r in results)
    for contributor, text in earnings["balances"].items():
        added = sum((Fraction(r["shares"].get(contributor, "0")) for r in results), Fraction(0))
        assert Fraction(text) - Fraction(earnings_before["balances"].get(contributor, "0")) == added
    assert earnings["by_role"]["contributors"] == (sum(earnings["paid"].values()) + earnings["unallocated"]
                                                  + sum(Fraction(b) for b in earnings["balances"].values()))
    report = ledger.verify(run.ledger_path)
    assert report.ok, report


def _nan_row(width: int, index: int, literal: str) -> bytes:
    row = ["1.0"] * width
    row[index] = literal
    return f'{{"inputs": [[{", ".join(["0.5"] * width)}], [{", ".join(row)}]]}}'.encode()


BAD = {
    # name: (body of width w, status, words the reason must hold ({w}, {short} = w - 1), loc (None: any))
    "wrong width": (lambda w: json.dumps({"inputs": [[1.0] * w, [1.0] * (w - 1)]}).encode(), 422,
                    ["inputs row 1", "{short} fields, expected {w}"], ["inputs", 1]),
    "NaN": (lambda w: _nan_row(w, 3, "NaN"), 422, ["inputs row 1", "field 3", "nan", "finite"], ["inputs", 1]),
    "inf": (lambda w: _nan_row(w, 2, "-Infinity"), 422, ["inputs row 1", "field 2", "inf", "finite"], ["inputs", 1]),
    "overflow": (lambda w: _nan_row(w, 4, "1e999"), 422, ["inputs row 1", "field 4", "finite"], ["inputs", 1]),
    "past float32": (lambda w: _nan_row(w, 4, "1e308"), 422, ["inputs row 1", "field 4", "1e+308", "float32"],
                     ["inputs", 1]),  # finite in float64, infinite in the float32 model
    "string": (lambda w: json.dumps({"inputs": [[1.0] * (w - 1) + ["7"]]}).encode(), 422,
               ["inputs row 0 field", "'7'"], ["inputs", 0, None]),
    "bool": (lambda w: json.dumps({"input": [True] + [1.0] * (w - 1)}).encode(), 422, ["input field 0", "True"],
             ["input", 0]),
    "nested": (lambda w: json.dumps({"inputs": [[[1.0] * w]]}).encode(), 422, ["inputs row 0 field 0"], ["inputs", 0, 0]),
    "no rows": (lambda w: b'{"inputs": []}', 422, ["inputs", "0 rows"], ["inputs"]),
    "too many rows": (lambda w: json.dumps({"inputs": [[1.0] * w] * (MAX_ROWS + 1)}).encode(), 422,
                      [f"{MAX_ROWS + 1} rows", f"1 to {MAX_ROWS}"], ["inputs"]),
    "both forms": (lambda w: json.dumps({"input": [1.0] * w, "inputs": [[1.0] * w]}).encode(), 422, ["exactly one"], []),
    "neither form": (lambda w: b"{}", 422, ["exactly one"], []),
    "unknown key": (lambda w: json.dumps({"input": [1.0] * w, "label": 1}).encode(), 422, ["label"], ["label"]),
    "not an object": (lambda w: b"[1, 2]", 422, ["object"], []),
    "not JSON": (lambda w: b'{"inputs": [[1,', 400, ["JSON"], None),
    "empty body": (lambda w: b"", 400, ["empty body"], ["body"]),
    "declared too large": (lambda w: b" " * (MAX_BODY_BYTES + 1), 413, ["Content-Length", str(MAX_BODY_BYTES)], ["body"]),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_request_gets_a_4xx_naming_the_problem_and_changes_nothing(run, server, name):
    make, status, words, loc = BAD[name]
    width = run_test_inputs(run).shape[1]
    before = server.head()["size"], server.client.get("/earnings").json()
    answer = server.client.post("/infer", content=make(width), headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    reason = answer.json()["reason"]
    for word in words:
        assert word.format(w=width, short=width - 1) in reason, (word, reason)
    if loc is not None:
        got = answer.json()["loc"]
        assert len(got) == len(loc) and all(e is None or e == g for e, g in zip(loc, got)), got
    assert (server.head()["size"], server.client.get("/earnings").json()) == before


def test_a_body_streamed_past_the_limit_is_refused_while_it_is_read(server):
    before = server.head()["size"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        yield b'{"inputs": [' + b"[1.0]," * 4096
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    answer = server.client.post("/infer", content=chunks(), headers={"content-type": "application/json"})
    assert answer.status_code == 413, answer.text
    assert "over the limit" in answer.json()["reason"] and "Content-Length" not in answer.json()["reason"]
    assert server.head()["size"] == before


def test_an_unknown_receipt_id_is_404(server):
    answer = server.client.get("/receipts/req-9999999999")
    assert answer.status_code == 404
    assert "req-9999999999" in answer.json()["reason"]


@pytest.mark.slow
@pytest.mark.parametrize("clients, options, enough", [
    (4, ("--batch-size", "4", "--max-wait-ms", "2"), 60),  # small groups, a timed wait
    (32, (), 400),  # the default adaptive groups, under the benchmark's target load
], ids=["4-clients-small-groups", "32-clients-defaults"])
def test_after_kill_9_under_load_every_acknowledged_receipt_is_still_provable(tmp_path, tiny_params, clients, options,
                                                                              enough):
    run = pipeline.open_run(str(tmp_path / "run"), **tiny_params)
    pipeline.attribute(run)
    x = run_test_inputs(run)
    acknowledged: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def client(url: str, worker: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as own:
            k = 0
            while not stop.is_set():
                try:
                    rows = np.take(x, range(worker + k, worker + k + 1 + k % 3), axis=0, mode="wrap")
                    answer = own.post("/infer", json={"inputs": rows.tolist()})
                except httpx.TransportError:
                    return  # the server is gone
                if answer.status_code != 200:
                    errors.append(answer.text)
                    return
                acknowledged.extend(r["receipt_id"] for r in answer.json()["results"])
                k += 1

    with Launched(run.directory, tmp_path / "server.log", *options) as served:
        threads = [threading.Thread(target=client, args=(served.url, w)) for w in range(clients)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < enough and time.monotonic() < deadline:
            time.sleep(0.05)
        served.process.send_signal(signal.SIGKILL)  # mid-load: clients are still sending
        served.process.wait(timeout=10)
        stop.set()
        for thread in threads:
            thread.join()
        served.client.close()
    assert not errors and len(acknowledged) >= enough
    receipts = run.directory / "inference" / "receipts.jsonl"
    with open(receipts, "ab") as torn:  # a receipt write cut short by the crash
        torn.write(b'{"request_id": "req-99999')

    with Launched(run.directory, tmp_path / "server.log") as again:
        for receipt_id in acknowledged[:30] + acknowledged[-60:]:  # the last ones were answered just before the kill
            assert_provable(again.client, receipt_id, log_key(run))
        new = again.client.post("/infer", json={"input": x[0].tolist()}).raise_for_status().json()["results"][0]
        assert new["receipt_id"] not in acknowledged
        assert_provable(again.client, new["receipt_id"], log_key(run))
        assert again.stop() == 0, again.log.read_text()
    report = ledger.verify(run.ledger_path)
    assert report.ok, report
    lines = receipts.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line)["request_id"] for line in lines[:-1])
    assert set(acknowledged) <= {json.loads(line)["request_id"] for line in lines[:-1]}  # each one, in the file
    check = check_receipts(run.directory)  # and every receipt of the file proven against the ledger
    assert check.ok and check.checked == check.total == len(lines) - 1, check


# --- the group commit, in-process -----------------------------------------------------------


class Recorder:
    """A handler that records each batch it serves and answers each request with ``(batch number, request)``."""

    def __init__(self, gate: threading.Event | None = None, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.gate, self.fail = gate, fail

    def __call__(self, requests: list[int]) -> list[tuple[int, int]]:
        if self.gate is not None:
            self.gate.wait()
        self.batches.append(list(requests))
        if self.fail:
            raise OSError("disk full")
        return [(len(self.batches) - 1, r) for r in requests]


def _answers(futures: list[Future]) -> list:
    return [f.result(timeout=10) for f in futures]


def test_group_commit_takes_at_most_batch_size_requests_in_arrival_order():
    gate = threading.Event()
    recorder = Recorder(gate)
    group = GroupCommit(recorder, batch_size=3, max_wait_ms=50)
    group.start()
    futures = [group.submit(i) for i in range(8)]  # the first batch holds at the gate while the rest queue
    gate.set()
    answers = _answers(futures)
    group.stop()
    assert [r for _, r in answers] == list(range(8))
    assert [r for batch in recorder.batches for r in batch] == list(range(8))
    assert all(1 <= len(batch) <= 3 for batch in recorder.batches)
    assert len(recorder.batches) <= 4  # 0 (alone, or with those already queued), then full batches of 3
    assert all(answers[r][0] == number for number, batch in enumerate(recorder.batches) for r in batch)


def test_group_commit_waits_at_most_max_wait_for_a_batch_to_fill():
    recorder = Recorder()
    group = GroupCommit(recorder, batch_size=100, max_wait_ms=30)
    group.start()
    start = time.monotonic()
    assert group.submit(1).result(timeout=10) == (0, 1)
    waited = time.monotonic() - start
    group.stop()
    assert 0.03 <= waited < 5  # waited for company, then served alone
    assert recorder.batches == [[1]]


def test_a_failed_batch_fails_each_of_its_requests_and_the_worker_goes_on():
    recorder = Recorder(fail=True)
    group = GroupCommit(recorder, batch_size=4, max_wait_ms=0)
    group.start()
    with pytest.raises(OSError, match="disk full"):
        group.submit(1).result(timeout=10)
    recorder.fail = False
    assert group.submit(2).result(timeout=10)[1] == 2
    group.stop()


def test_stop_answers_the_queued_requests_then_refuses_new_ones():
    gate = threading.Event()
    group = GroupCommit(Recorder(gate), batch_size=2, max_wait_ms=0)
    with pytest.raises(ServerStopped):
        group.submit(0)  # not started
    group.start()
    futures = [group.submit(i) for i in range(5)]
    stopper = threading.Thread(target=group.stop)
    stopper.start()
    time.sleep(0.05)
    with pytest.raises(ServerStopped):
        group.submit(9)
    gate.set()
    stopper.join(timeout=10)
    assert [r for _, r in _answers(futures)] == list(range(5))


@pytest.mark.parametrize("batch_size, groups", [(64, [[0], [1, 2, 3, 4, 5]]), (3, [[0], [1, 2, 3], [4, 5]])])
def test_requests_arriving_during_a_commit_are_the_next_group_and_none_waits_on_a_timer(batch_size, groups):
    entered, gate, batches = threading.Event(), threading.Event(), []

    def commit(requests: list[int]) -> list[int]:
        batches.append(list(requests))
        entered.set()
        gate.wait()
        return list(requests)

    group = GroupCommit(commit, batch_size=batch_size, max_wait_ms=0)
    group.start()
    futures = [group.submit(0)]
    assert entered.wait(10)  # request 0 went alone: nothing was queued, and nothing is waited for
    futures += [group.submit(i) for i in range(1, 6)]  # while its commit runs
    gate.set()
    assert _answers(futures) == list(range(6))
    group.stop()
    assert batches == groups


@pytest.mark.parametrize("batch_size, max_wait_ms", [(0, 5.0), (2.0, 5.0), (4, -1.0), (4, float("nan"))])
def test_bad_group_commit_settings_are_refused(batch_size, max_wait_ms):
    with pytest.raises(ValueError, match="batch_size|max_wait_ms"):
        GroupCommit(Recorder(), batch_size, max_wait_ms)


def test_serving_a_missing_run_or_with_bad_settings_exits_2_naming_it(run, tmp_path, capsys):
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    assert cli.main(["serve", str(tmp_path / "nowhere"), "--port", "1"]) == 2  # the datanet-lab subcommand
    assert "run directory not found" in capsys.readouterr().err
    assert main([str(run.directory), "--batch-size", "0"]) == 2
    assert "batch_size must be an integer >= 1, got 0" in capsys.readouterr().err


def test_no_module_of_the_package_imports_the_dev_only_http_client():
    """httpx is the dev extra's: tests and benchmarks launch servers with it (tests/serving/harness.py)."""
    package = Path(__file__).resolve().parents[2] / "datanet_lab"
    importing = [str(p.relative_to(package)) for p in package.rglob("*.py")
                 if re.search(r"^\s*(from|import)\s+httpx\b", p.read_text(), re.MULTILINE)]
    assert importing == []


@pytest.mark.slow
def test_importing_the_package_and_its_server_loads_no_http_client():
    probe = ("import sys, datanet_lab, datanet_lab.cli, datanet_lab.serving, datanet_lab.serving.server; "
             "print(sorted(m for m in sys.modules if m.partition('.')[0] in ('httpx', 'httpcore')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


class _Refusing:
    """A service that serves the first row of each request and refuses any other row as
    an input its model cannot serve (as a group commit isolating a bad request does)."""

    n_features = 3

    def submit(self, x: np.ndarray) -> Future:
        future: Future = Future()
        if len(x) > 1:
            future.set_exception(RequestError("data row 2, field 0 is 3e+38: the model's output is not finite"))
        else:
            future.set_result(Answered([{"receipt_id": "req-0", "batch_id": "batch-0", "prediction": 1, "probability": 0.5,
                                         "fee": 10, "fee_split": {"contributors": 10}, "shares": {}, "top": []}]))
        return future


def test_an_input_the_service_refuses_while_serving_gets_422_and_other_requests_are_answered():
    from fastapi.testclient import TestClient

    client = TestClient(create_app(_Refusing()))
    refused = client.post("/infer", json={"inputs": [[1.0, 2.0, 3.0], [3e38, 2.0, 3.0]]})
    assert refused.status_code == 422, refused.text
    assert refused.json() == {"reason": "inputs: data row 2, field 0 is 3e+38: the model's output is not finite",
                              "loc": ["inputs"]}
    answered = client.post("/infer", json={"input": [1.0, 2.0, 3.0]})
    assert answered.status_code == 200 and answered.json()["results"][0]["receipt_id"] == "req-0"


class _Recording:
    """A service that records what it is asked to serve and answers each row at once."""

    def __init__(self, n_features: int) -> None:
        self.n_features, self.submitted = n_features, []

    def submit(self, x: np.ndarray) -> Future:
        self.submitted.append(x)
        future: Future = Future()
        future.set_result(Answered([{"receipt_id": f"req-{i}"} for i in range(len(x))], {"queue": 0.001}))
        return future


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_request_the_app_refuses_never_reaches_the_service(name):
    from fastapi.testclient import TestClient

    service = _Recording(8)
    make, status, _, _ = BAD[name]
    answer = TestClient(create_app(service)).post("/infer", content=make(service.n_features),
                                                  headers={"content-type": "application/json"})
    assert answer.status_code == status and service.submitted == []


def _reference_rows(body: dict, width: int) -> tuple[int, object]:
    """What the app answers for ``body``, checked row by row with check_input (the reference)."""
    field = "input" if "input" in body else "inputs"
    rows = [body["input"]] if field == "input" else body["inputs"]
    for index, row in enumerate(rows):
        try:
            check_input(row, width)
        except RequestError as exc:
            loc = [field] if field == "input" else [field, index]
            return 422, loc, str(exc)
    return 200, np.array(rows, dtype=np.float64)


def test_rows_checked_at_once_are_accepted_or_refused_as_row_by_row():
    from fastapi.testclient import TestClient

    service = _Recording(3)
    client = TestClient(create_app(service))
    rng = np.random.default_rng(0)
    edge = [0.0, -0.0, 1, -7, 3.4028234e38, -3.4028234e38, 1e-320, 3.5e38, 1e308, float("nan"), float("inf")]
    for case in range(60):
        rows = rng.normal(size=(int(rng.integers(1, 5)), 3)).tolist()
        for _ in range(int(rng.integers(0, 3))):  # some edge values, finite in float32 or not
            rows[rng.integers(len(rows))][rng.integers(3)] = edge[rng.integers(len(edge))]
        if case % 7 == 0:
            rows[-1] = rows[-1][:2]  # a short row
        body = {"input": rows[0]} if case % 5 == 0 else {"inputs": rows}
        answer = client.post("/infer", content=json.dumps(body).encode(), headers={"content-type": "application/json"})
        expected = _reference_rows(body, 3)
        assert answer.status_code == expected[0], (body, answer.text)
        if expected[0] == 200:
            got = service.submitted.pop()
            assert got.dtype == np.float64 and np.array_equal(got, expected[1]), body
        else:
            assert answer.json()["loc"] == expected[1] and expected[2] in answer.json()["reason"], (body, answer.text)
    assert service.submitted == []


def test_each_answer_says_where_its_time_went(server, run):
    x = run_test_inputs(run)[:1]
    start = time.perf_counter()
    answer = server.client.post("/infer", json={"inputs": x.tolist()})
    latency_ms = (time.perf_counter() - start) * 1e3
    assert answer.status_code == 200, answer.text
    parts = [part.split(";dur=") for part in answer.headers["server-timing"].split(", ")]
    assert [name for name, _ in parts] == list(TIMING_PHASES)
    spent = [float(value) for _, value in parts]
    assert all(value >= 0 for value in spent) and sum(spent) <= latency_ms + 0.01
    assert spent[TIMING_PHASES.index("attribution")] > 0 and spent[TIMING_PHASES.index("commit")] > 0


def test_the_load_generator_gets_each_request_its_own_answer_in_order(server, run):
    x = run_test_inputs(run)[:9]
    requests = [post("/infer", json.dumps({"input": row.tolist()}).encode()) for row in x]
    answers, wall = run_load(int(server.url.rsplit(":", 1)[1]), requests, clients=3)
    assert len(answers) == 9 and wall > 0 and all(a.status == 200 and a.latency > 0 for a in answers)
    results = [json.loads(a.body)["results"][0] for a in answers]
    assert [r["prediction"] for r in results] == QueryAttributor.from_run(run).predict(x)[0].tolist()
    assert len({r["receipt_id"] for r in results}) == 9
    assert all(a.header("Content-Type") == "application/json" for a in answers)
    with canned(300) as fixed:
        got, _ = run_load(fixed.port, requests, clients=2)
    assert [a.head + a.body for a in got] == [canned_answer(300)] * 9
