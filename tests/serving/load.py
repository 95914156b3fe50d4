"""A light HTTP/1.1 load generator for ``benchmarks/http_bench.py``, and a canned server to
measure it against.

On a machine of few cores the clients and the server share them, so the load generator must cost
little per request, or it, not the server, is measured: one asyncio event loop drives every
client, each a keep-alive connection that sends request bytes prepared before the clock starts
and waits for the answer (framed by its ``Content-Length``; nothing else is parsed while the
clock runs) before sending its next. :func:`serve_canned` answers every request with the same
bytes at once, so :func:`run_load` against it measures what the load generator itself can send;
:func:`serve_instant` runs the real app (:func:`~datanet_lab.serving.app.create_app`, under uvicorn
as ``datanet-lab serve`` runs it) over a service that answers at once, so against it what the HTTP
stack alone can serve is measured.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Answer:
    """One answered request: its status, header block (raw bytes, status line included), body,
    and latency (s, from writing the request to reading the body's last byte)."""

    status: int
    head: bytes
    body: bytes
    latency: float

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower().encode()
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == wanted:
                return value.strip().decode()
        return None


def post(path: str, body: bytes, host: str = "127.0.0.1") -> bytes:
    """The bytes of a keep-alive ``POST`` of JSON ``body`` to ``path``."""
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            return int(value)
    raise ValueError(f"an answer without Content-Length (chunked answers are not read): {head[:200]!r}")


async def _client(port: int, requests: Sequence[bytes], answers: list[Answer | None], indices: Sequence[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for index in indices:
            start = time.perf_counter()
            writer.write(requests[index])
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.readexactly(_content_length(head))
            answers[index] = Answer(int(head.split(b" ", 2)[1]), head, body, time.perf_counter() - start)
    finally:
        writer.close()


def run_load(port: int, requests: Sequence[bytes], clients: int) -> tuple[list[Answer], float]:
    """Send ``requests`` (prepared bytes, e.g. :func:`post`) to ``127.0.0.1:port`` from ``clients``
    connections, client ``c`` sending requests ``c, c + clients, ...`` one after another; every
    answer, in request order, and the wall time (s) from the first connection opened to the last
    answer read.

    Raises:
        OSError, ValueError: a connection failed or an answer could not be framed.
    """
    if not 1 <= clients <= len(requests):
        raise ValueError(f"clients must be 1 to {len(requests)} (the number of requests), got {clients}")
    answers: list[Answer | None] = [None] * len(requests)

    async def everyone() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(_client(port, requests, answers, range(c, len(requests), clients)) for c in range(clients)))
        return time.perf_counter() - start

    wall = asyncio.run(everyone())
    return [a for a in answers if a is not None], wall


class _Canned(asyncio.Protocol):
    """Answers each request read (framed by its ``Content-Length``) with ``answer``."""

    def __init__(self, answer: bytes) -> None:
        self.answer, self.buffer = answer, b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            length = _content_length(self.buffer[: end + 4])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(self.answer)


def canned_answer(body_bytes: int) -> bytes:
    """A ``200`` JSON answer whose body is ``body_bytes`` long (at least 10)."""
    body = b'{"pad":"' + b"x" * max(body_bytes - 10, 0) + b'"}'
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


def serve_canned(port: int, body_bytes: int) -> None:
    """Answer every request on ``127.0.0.1:port`` with :func:`canned_answer`, until killed."""

    async def forever() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Canned(canned_answer(body_bytes)), "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(forever())


class _Instant:
    """A :class:`~datanet_lab.serving.app.Service` whose every request is answered at once with
    the same ``results``."""

    def __init__(self, n_features: int, results: list[dict[str, Any]]) -> None:
        self.n_features, self.results = n_features, results

    def submit(self, x: Any) -> Future:
        from datanet_lab.serving.app import Answered  # here: the canned server imports nothing of the app

        future: Future = Future()
        future.set_result(Answered(self.results))
        return future


def serve_instant(port: int, n_features: int, results_path: str) -> None:
    """Serve the app on ``127.0.0.1:port`` over :class:`_Instant` (``results``: the JSON list in
    ``results_path``), with ``datanet-lab serve``'s uvicorn settings, until killed."""
    import uvicorn

    from datanet_lab.serving.app import create_app
    from datanet_lab.serving.server import UVICORN

    results = json.loads(Path(results_path).read_text())
    uvicorn.run(create_app(_Instant(n_features, results)), host="127.0.0.1", port=port, log_level="warning", **UVICORN)


class Listening:
    """This module run as a script, serving (``canned`` or ``instant`` with their arguments) on a
    free loopback port, in a subprocess started from the repository root; ready to connect to. A
    context manager that kills it at exit. (Run by its path, not imported as ``tests.serving``: a
    package may install a top-level ``tests`` of its own, which then hides the repository's.)

    Raises:
        RuntimeError: it did not listen within ``timeout`` seconds.
    """

    def __init__(self, kind: str, *arguments: object, timeout: float = 60.0) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        command = [sys.executable, str(Path(__file__).resolve()), kind, str(self.port), *map(str, arguments)]
        self.process = subprocess.Popen(command, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"{' '.join(command)} did not listen within {timeout} s") from None
                time.sleep(0.05)

    def __enter__(self) -> Listening:
        return self

    def __exit__(self, *_: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)



def canned(body_bytes: int) -> Listening:
    """:func:`serve_canned` in a subprocess."""
    return Listening("canned", body_bytes)


def instant(n_features: int, results_path: Path) -> Listening:
    """:func:`serve_instant` in a subprocess."""
    return Listening("instant", n_features, results_path)


if __name__ == "__main__":
    if sys.argv[1] == "canned":
        serve_canned(int(sys.argv[2]), int(sys.argv[3]))
    else:
        serve_instant(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
