"""The tail server bounds what a client can hold: time to send a request's head and body, idle
and open connections, images per request; framing errors get the JSON error body. Each test runs
`isplit serve` as its own process on loopback."""

import http.client
import json
import socket
import threading
import time

import numpy as np
import onnxruntime as ort

from isplit.deploy.manifest import Manifest
from serving import CAP, error_of, infer_body, logits, serve, wait_until


def _connect(served) -> socket.socket:
    s = socket.create_connection((served.host, served.port), timeout=10)
    return s


def _read_all(s: socket.socket) -> bytes:
    """What the server sends until it closes the connection."""
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def _json_error(raw: bytes) -> tuple[int, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), raw[:300]
    return int(head.split()[1]), json.loads(body)["error"]


def test_idle_and_half_head_connections_are_closed_after_the_timeout(small_export):
    with serve(small_export, "--header-timeout", "1", "--keep-alive", "1") as served:
        before = served.open_fds()
        idle = [_connect(served) for _ in range(30)]
        half = [_connect(served) for _ in range(30)]
        for s in half:
            s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert wait_until(lambda: served.open_fds() >= before + 60, 5)
        began = time.monotonic()
        for s in half:
            status, error = _json_error(_read_all(s))
            assert status == 408 and "head did not arrive within 1 s" in error
        for s in idle:
            assert _read_all(s) == b""  # closed without an answer: it asked nothing
        assert time.monotonic() - began < 5
        assert wait_until(lambda: served.open_fds() <= before, 5), (served.open_fds(), before)
        # A kept-alive connection is closed after --keep-alive once it goes idle.
        s = _connect(served)
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = http.client.HTTPResponse(s)
        resp.begin()
        assert resp.status == 200 and resp.read() == b'{"live":true}'
        t = time.monotonic()
        assert _read_all(s) == b"" and time.monotonic() - t < 4
        for s in idle + half:
            s.close()


def test_a_stalled_body_delays_no_other_client(small_export):
    body, headers, z = infer_body(small_export, 1)
    head = (
        b"POST /v2/models/servernets_Wide-tail/infer HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: %d\r\nInference-Header-Content-Length: %s\r\n\r\n"
        % (len(body), headers["Inference-Header-Content-Length"].encode())
    )
    args = ("--body-timeout", "2", "--batch-wait-ms", "300", "--max-batch", "8")
    with serve(small_export, *args) as served:
        stalled = [_connect(served) for _ in range(3)]
        for s in stalled:
            s.sendall(head + body[: len(body) // 2])
        time.sleep(0.4)  # longer than the batch wait: they are not coming soon
        path = "/v2/models/servernets_Wide-tail/infer"
        for _ in range(5):
            t = time.monotonic()
            out = logits(*served.request("POST", path, body, headers))
            assert time.monotonic() - t < 0.25  # not the 300 ms batch wait
        assert out.shape == (1, 10)
        for s in stalled:
            status, error = _json_error(_read_all(s))
            assert status == 408 and "body did not arrive within 2 s" in error


def test_images_per_request_are_capped_as_in_the_triton_configuration(small_export):
    m = Manifest.load(small_export)
    assert m.max_batch_size == CAP
    config = (small_export / "triton" / m.name / "config.pbtxt").read_text()
    assert f"max_batch_size: {CAP}\n" in config
    session = ort.InferenceSession(str(small_export / "tail.onnx"))
    path = f"/v2/models/{m.name}/infer"
    with serve(small_export, "--max-batch", "5") as served:
        body, headers, z = infer_body(small_export, CAP + 1)
        status, _, text = served.request("POST", path, body, headers)
        assert status == 413 and f"at most {CAP} per request" in error_of(text)
        # The cap itself is served, in chunks of --max-batch: the same logits.
        body, headers, z = infer_body(small_export, CAP, seed=1)
        status, resp_headers, text = served.request("POST", path, body, headers)
        out = logits(status, resp_headers, text)
        np.testing.assert_allclose(out, session.run(None, {"activation": z})[0], atol=1e-5)
        params = json.loads(text[: int(resp_headers["inference-header-content-length"])])
        assert params["parameters"]["chunks"] == 7 and params["parameters"]["batch_size"] <= 5


def test_framing_errors_and_a_connection_cap_get_json_errors(small_export):
    with serve(small_export, "--max-connections", "4") as served:
        cases = [
            b"POST /v2/health/live HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
            b"POST /v2/health/live HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}garbage!",
            b"NOT HTTP AT ALL\r\n\r\n",
            b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        ]
        for raw in cases:
            s = _connect(served)
            s.sendall(raw)
            reply = _read_all(s)
            status, error = _json_error(reply)
            assert status in (400, 431) and error, reply[:200]
            s.close()
        held = [_connect(served) for _ in range(4)]
        time.sleep(0.2)
        extra = _connect(served)
        status, error = _json_error(_read_all(extra))
        assert status == 503 and "at most 4 connections" in error
        for s in held:
            s.close()
        assert wait_until(lambda: served.request("GET", "/v2/health/live")[0] == 200, 5)


def test_docs_are_off_by_default_and_behind_the_token(small_export):
    with serve(small_export, "--host", "0.0.0.0") as served:
        assert "warning: listening on 0.0.0.0 without a token" in served.first_lines
        for path in ("/docs", "/redoc", "/openapi.json"):
            status, _, text = served.request("GET", path)
            assert status == 404 and error_of(text) == "Not Found"
    with serve(small_export, "--docs", "--token", "s3cret") as served:
        assert "warning" not in served.first_lines  # loopback
        auth = {"Authorization": "Bearer s3cret"}
        for path in ("/docs", "/redoc", "/openapi.json"):
            status, _, text = served.request("GET", path)
            assert status == 401 and "token" in error_of(text)
            assert served.request("GET", path, headers=auth)[0] == 200
        schema = json.loads(served.request("GET", "/openapi.json", headers=auth)[2])
        assert "/v2/models/{name}/infer" in schema["paths"]


def test_metrics_count_what_was_sent(small_export):
    from prometheus_client.parser import text_string_to_metric_families

    m = Manifest.load(small_export)
    path = f"/v2/models/{m.name}/infer"
    with serve(small_export, "--token", "t", "--max-batch", "4") as served:
        auth = {"Authorization": "Bearer t"}
        sizes = [1, 3, 6, 2]

        def send(n):
            body, headers, _ = infer_body(small_export, n)
            assert served.request("POST", path, body, {**headers, **auth})[0] == 200

        threads = [threading.Thread(target=send, args=(n,)) for n in sizes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert served.request("POST", path, b"{}", auth)[0] == 400
        assert served.request("POST", path, b"{}")[0] == 401
        assert served.request("GET", "/metrics")[0] == 401
        status, _, text = served.request("GET", "/metrics", headers=auth)
        assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    model = (("model", m.name),)
    assert samples[("isplit_inference_images_total", model)] == sum(sizes)
    assert samples[("isplit_requests_total", (("code", "200"),))] == len(sizes)
    assert samples[("isplit_requests_total", (("code", "400"),))] == 1
    assert samples[("isplit_requests_total", (("code", "401"),))] == 2
    assert samples[("isplit_batch_size_sum", model)] == sum(sizes)  # every image ran once
    # at most 4 images per batch: at least 3 batches (concurrent requests may share one)
    assert samples[("isplit_batch_size_count", model)] >= -(-sum(sizes) // 4)
    le4 = (("le", "4.0"), *model)
    assert samples[("isplit_batch_size_bucket", le4)] == samples[("isplit_batch_size_count", model)]
    assert samples[("isplit_queue_seconds_count", model)] >= len(sizes)
    assert (
        samples[("isplit_tail_seconds_count", model)] == samples[("isplit_batch_size_count", model)]
    )
    assert samples[("isplit_open_connections", ())] >= 1
