"""The tail server as a real process on loopback (``isplit serve``), and raw HTTP helpers, for
tests/deploy/test_server_*.py."""

import http.client
import json
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from isplit.deploy.client import request_tensors
from isplit.deploy.manifest import Manifest
from isplit.deploy.wire import HEADER, decode_response, encode_request

SRC = Path(__file__).resolve().parents[1] / "src"
#: images per request at most in the small export (its manifest's and Triton's max_batch_size)
CAP = 32


def request(url: str, method: str, path: str, body: bytes | None = None, headers=None):
    """``(status, headers, body)`` of one request to the server at ``url`` (http://host:port)."""
    host, port = url.split("://")[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


class Served:
    """``isplit serve`` running in its own process."""

    def __init__(self, proc: subprocess.Popen, url: str, first_lines: str) -> None:
        self.proc, self.url, self.first_lines = proc, url, first_lines
        rest = url.split("://")[1]
        self.host, self.port = rest.rsplit(":", 1)[0], int(rest.rsplit(":", 1)[1])

    def request(self, method: str, path: str, body: bytes | None = None, headers=None):
        """``(status, headers, body)`` over a new connection."""
        return request(self.url, method, path, body, headers)

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read())[1]) / 1024


@contextmanager
def serve(folder: Path, *args: str, scheme: str = "http"):
    """``isplit serve folder --port 0 *args`` until the block ends (then SIGTERM, or kill)."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    env.pop("ISPLIT_TOKEN", None)
    cmd = [sys.executable, "-m", "isplit.cli", "serve", str(folder), "--port", "0", *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        lines = ""
        while True:
            line = proc.stdout.readline()
            lines += line
            m = re.search(rf"at ({scheme}://[\d.]+:\d+)/v2", line)
            if m or not line:
                break
        if m is None:
            raise AssertionError(f"the server did not start: {lines}{proc.stdout.read()}")
        yield Served(proc, m.group(1), lines)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()


def infer_body(folder: Path, n: int, seed: int = 0) -> tuple[bytes, dict, np.ndarray]:
    """A binary float32 infer request of ``n`` random tensors: body, headers, the tensors."""
    m = Manifest.load(folder, preprocess=False)
    z = np.random.default_rng(seed).standard_normal((n, *m.transmitted_shape), np.float32)
    body, header_length = encode_request(request_tensors(z, quantize=False))
    return body, {HEADER: str(header_length)}, z


def logits(status: int, headers: dict, body: bytes) -> np.ndarray:
    assert status == 200, body[:300]
    return decode_response(body, headers.get(HEADER) or headers.get(HEADER.lower()))[1]["logits"]


def error_of(body: bytes) -> str:
    return json.loads(body)["error"]


def wait_until(condition, timeout: float, step: float = 0.05) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()
