"""The client keeps its results: each image's answer printed as it arrives, a failed image or
request on its own line, the run going on; a refused connection retried with back-off; a server
killed mid-run (a real `isplit serve` process) costs only the images not yet answered."""

import json
import queue
import re
import signal
import socket
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import isplit
from helpers import isplit_process
from isplit.cli import main
from isplit.deploy import Client, TailServer
from isplit.deploy.client import ServerUnreachable

N_FILES = 4


@pytest.fixture(scope="module")
def files(tmp_path_factory, demo_export):
    """N_FILES Fashion-MNIST test images as PNG files, and the class the unsplit network gives
    each."""
    demo = isplit.load_model("demo-vgg16")
    test_set = isplit.load_dataset("fashion-mnist", "test", demo.preprocess)
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i in range(N_FILES):
        paths.append(folder / f"{i}.png")
        Image.fromarray(test_set.images[i].numpy()).save(paths[-1])
    with torch.no_grad():
        x = torch.stack([test_set[i][0] for i in range(N_FILES)])
        return [str(p) for p in paths], demo.model(x).argmax(1).tolist()


@pytest.fixture(scope="module")
def server(demo_export):
    with TailServer(demo_export) as s:
        yield s


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_an_unreadable_image_is_reported_on_its_line_and_the_run_goes_on(
    demo_export, server, files, tmp_path, capsys
):
    paths, want = files
    bad, missing = tmp_path / "bad.png", tmp_path / "missing.png"
    bad.write_bytes(b"not an image")
    run = [paths[0], str(bad), paths[1], str(missing), paths[2]]
    capsys.readouterr()
    assert main(["infer", str(demo_export), *run, "--server", server.url, "--json"]) == 1
    out, err = capsys.readouterr()
    lines = _lines(out)
    assert [d["image"] for d in lines] == run
    assert [d.get("index") for d in lines] == [want[0], None, want[1], None, want[2]]
    assert "cannot read image" in lines[1]["error"] and "not found" in lines[3]["error"]
    assert set(lines[1]) == {"image", "error"}
    assert err.strip().splitlines()[-1] == "isplit: 2 of 5 images failed"

    # The table says the same, one line per image, in order.
    assert main(["infer", str(demo_export), paths[0], str(bad), "--server", server.url]) == 1
    out, err = capsys.readouterr()
    rows = out.splitlines()
    assert "rtt ms" in rows[0] and len(rows) == 3
    assert rows[1].startswith(paths[0]) and "error: cannot read image" in rows[2]
    assert "1 of 2 images failed" in err

    # The Python API: one Prediction per image, `error` set on the failed ones.
    with Client(demo_export, server.url) as client:
        got = list(client.predict_files(run))
        assert [p.ok for p in got] == [True, False, True, False, True]
        assert [p.index for p in got if p.ok] == want[:3]
        assert got[1].to_json() == {"image": str(bad), "error": got[1].error}
        with pytest.raises(isplit.IsplitError, match="cannot read image"):
            client.classify_files(run)  # all or nothing, as before
        assert [p.index for p in client.classify_files(paths)] == want


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_is_retried_with_back_off(demo_export):
    started = time.perf_counter()
    with pytest.raises(ServerUnreachable, match="3 tries"):
        Client(demo_export, f"http://127.0.0.1:{_free_port()}", retries=2, backoff=0.1)
    assert 0.3 <= time.perf_counter() - started < 5  # waited 0.1 s, then 0.2 s

    # A server that comes up while the client waits is reached.
    port = _free_port()
    late = TailServer(demo_export, port=port)
    timer = threading.Timer(1.0, late.start)
    timer.start()
    try:
        with Client(demo_export, f"http://127.0.0.1:{port}", retries=8, backoff=0.25) as client:
            assert client.classify(np.zeros((1, 1, 32, 32), np.float32))[0].ok
    finally:
        timer.join()
        late.stop()


def _reader(stream) -> queue.Queue:
    """The lines of ``stream`` as they come, in a queue (None at the end)."""
    q: queue.Queue = queue.Queue()

    def read():
        for line in stream:
            q.put(line)
        q.put(None)

    threading.Thread(target=read, daemon=True).start()
    return q


def test_infer_against_a_server_killed_mid_run_keeps_every_answer(demo_export, files):
    paths, want = files
    n, kill_after = 400, 10
    serve = isplit_process("serve", str(demo_export), "--port", "0")
    infer = None
    try:
        first = serve.stdout.readline()
        url = re.search(r"at (http://\S+)/v2", first).group(1)
        run = [paths[i % N_FILES] for i in range(n)]
        infer = isplit_process("infer", str(demo_export), *run, "--server", url, "--json")
        lines = _reader(infer.stdout)
        before = []
        while len(before) < kill_after:  # printed as they arrive, not at the end
            line = lines.get(timeout=60)
            assert line is not None, infer.stderr.read()
            before.append(json.loads(line))
        serve.send_signal(signal.SIGKILL)
        serve.wait(10)
        after = []
        while (line := lines.get(timeout=60)) is not None:
            after.append(json.loads(line))
        assert infer.wait(30) == 1
        err = infer.stderr.read()
    finally:
        for p in (serve, infer):
            if p is not None and p.poll() is None:
                p.kill()
    got = before + after
    assert [d["image"] for d in got] == run  # one line per image, in order
    answered = [d for d in got if "error" not in d]
    assert len(answered) >= kill_after and got[: len(answered)] == answered
    assert [d["index"] for d in answered] == [want[i % N_FILES] for i in range(len(answered))]
    failed = got[len(answered) :]
    assert failed and all(set(d) == {"image", "error"} for d in failed)
    assert "cannot reach the server" in failed[0]["error"] and "4 tries" in failed[0]["error"]
    assert all(d["error"].startswith("not sent: cannot reach") for d in failed[1:])
    assert err.strip().splitlines()[-1] == f"isplit: {len(failed)} of {n} images failed"
