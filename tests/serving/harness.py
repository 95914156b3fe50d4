"""A real HTTP server of payable inference in a subprocess, for the tests and
``benchmarks/http_bench.py``: it needs ``httpx`` (the dev extra), which the package never imports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


class Launched:
    """``python -m datanet_lab.serving.server RUN_DIR`` in a subprocess on a free loopback port,
    ready (it answered ``GET /head``). Its output goes to ``log``. As a context manager it kills a
    server still running at exit; :meth:`stop` stops it gracefully.

    Raises:
        RuntimeError: the server exited, or did not answer within ``timeout`` seconds (its log quoted).
    """

    def __init__(self, run: str | Path, log: Path, *options: str, timeout: float = 60.0) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url, self.log = f"http://127.0.0.1:{port}", Path(log)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "datanet_lab.serving.server", str(run), "--port", str(port), "--log-level", "warning", *options],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        self.client = httpx.Client(base_url=self.url, timeout=30)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}: {self.log.read_text()}")
            try:
                self.client.get("/head").raise_for_status()
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"the server did not answer /head within {timeout} s: {self.log.read_text()}") from None
                time.sleep(0.1)

    def head(self) -> dict[str, Any]:
        return self.client.get("/head").raise_for_status().json()

    def stop(self) -> int:
        """SIGTERM (a graceful stop); the exit code."""
        self.client.close()
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def __enter__(self) -> Launched:
        return self

    def __exit__(self, *_: object) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
