"""The tail server's life: memory goes back after large requests; SIGTERM drains (readiness
turns not-ready, every accepted request is answered, exit 0); TLS with a self-signed
certificate. Each test runs `isplit serve` as its own process on loopback."""

import http.client
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import numpy as np
import onnxruntime as ort
import pytest

from isplit.deploy.manifest import Manifest
from serving import CAP, error_of, infer_body, logits, serve, wait_until


def test_memory_returns_after_large_requests(small_export):
    m = Manifest.load(small_export)
    path = f"/v2/models/{m.name}/infer"
    with serve(small_export, "--max-batch", "8") as served:
        small, headers, _ = infer_body(small_export, 1)
        assert served.request("POST", path, small, headers)[0] == 200
        time.sleep(0.3)
        idle = served.rss_mb()
        assert idle < 250  # the server does not import torch (about 500 MB)
        full, full_headers, _ = infer_body(small_export, CAP)  # 2 MB
        over, over_headers, _ = infer_body(small_export, 8 * CAP)  # 16 MB, refused after reading
        failures = []

        def client():
            for _ in range(3):
                failures.append(served.request("POST", path, full, full_headers)[0] != 200)
                failures.append(served.request("POST", path, over, over_headers)[0] != 413)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        peak = idle
        while any(t.is_alive() for t in threads):
            peak = max(peak, served.rss_mb())
            time.sleep(0.02)
        assert not any(failures)
        assert wait_until(lambda: served.rss_mb() <= 1.2 * idle, 3), (idle, peak, served.rss_mb())


def _send_half(served, body: bytes, headers: dict, path: str) -> socket.socket:
    s = socket.create_connection((served.host, served.port), timeout=30)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    s.sendall(head.encode() + body[: len(body) // 2])
    return s


def test_sigterm_answers_every_accepted_request_then_exits_0(small_export):
    m = Manifest.load(small_export)
    path = f"/v2/models/{m.name}/infer"
    session = ort.InferenceSession(str(small_export / "tail.onnx"))
    args = ("--drain-delay", "1.5", "--drain-timeout", "20", "--max-batch", "4")
    with serve(small_export, *args) as served:
        requests = [infer_body(small_export, n, seed=n) for n in (1, 2, 3, 5, 8, 13)]
        # Accepted, half-sent: in flight when SIGTERM comes.
        sockets = [_send_half(served, body, headers, path) for body, headers, _ in requests]
        running = []  # and clients sending whole requests, one after another
        stop = threading.Event()

        def busy():
            body, headers, z = requests[2]
            while not stop.is_set():
                try:
                    running.append(served.request("POST", path, body, headers)[0])
                except OSError:  # the port is closed: not accepted
                    break

        threads = [threading.Thread(target=busy) for _ in range(3)]
        for t in threads:
            t.start()
        assert wait_until(lambda: len(running) > 10, 10)
        served.proc.send_signal(signal.SIGTERM)
        assert wait_until(lambda: served.request("GET", "/v2/health/ready")[0] == 503, 1)
        status, _, text = served.request("GET", "/v2/health/ready")
        assert status == 503 and "shutting down" in error_of(text)
        assert served.request("GET", "/v2/health/live")[0] == 200
        for s, (body, _, z) in zip(sockets, requests):
            s.sendall(body[len(body) // 2 :])
            resp = http.client.HTTPResponse(s)
            resp.begin()
            out = logits(resp.status, dict(resp.getheaders()), resp.read())
            want = session.run(None, {"activation": z})[0]
            np.testing.assert_allclose(out, want, atol=1e-5)
            s.close()
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert served.proc.wait(timeout=30) == 0
        assert set(running) == {200}  # every request the server accepted was answered
        assert served.proc.stdout.read().strip().endswith("stopped")
        with pytest.raises(OSError):
            socket.create_connection((served.host, served.port), timeout=5)


def _self_signed(folder) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a self-signed certificate with")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


def test_tls_with_a_self_signed_certificate(small_export, tmp_path, cli_error):
    cert, key = _self_signed(tmp_path)
    m = Manifest.load(small_export)
    args = ("--ssl-certfile", cert, "--ssl-keyfile", key, "--host", "127.0.0.1")
    with serve(small_export, *args, "--token", "t", scheme="https") as served:
        assert served.url.startswith("https://") and "warning" not in served.first_lines
        context = ssl.create_default_context(cafile=cert)
        conn = http.client.HTTPSConnection(served.host, served.port, context=context, timeout=30)
        body, headers, z = infer_body(small_export, 2)
        conn.request(
            "POST", f"/v2/models/{m.name}/infer", body, {**headers, "Authorization": "Bearer t"}
        )
        resp = conn.getresponse()
        assert logits(resp.status, dict(resp.getheaders()), resp.read()).shape == (2, 10)
        conn.close()
        with pytest.raises(http.client.RemoteDisconnected):  # plain HTTP is not answered
            served.request("GET", "/v2/health/live")
    err = cli_error("serve", str(small_export), "--ssl-certfile", key, "--ssl-keyfile", cert)
    assert "cannot use the certificate" in err
    err = cli_error("serve", str(small_export), "--ssl-certfile", cert)
    assert "needs both --ssl-certfile and --ssl-keyfile" in err
