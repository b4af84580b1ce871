"""A real Triton in the tests: NVIDIA's ``tritonserver`` (bundled in PyPI's ``nvidia-pytriton``,
CPU only, Python backend only) serves the exported tail through PyTriton, and ``isplit infer`` and
the Python ``Client`` run against it unchanged, float32 and 8-bit.

PyTriton lives in its own environment (``make setup`` makes ``.venv/pytriton``; another Python:
``$ISPLIT_PYTRITON_PYTHON``): its Python backend stub is built against numpy 1 and returns empty
tensors under isplit's numpy 2. ``pytriton_tail.py`` is the server program run there. Skipped,
with the reason, where that environment is missing or PyTriton does not import.

The exported ``triton/`` model repository is loaded in that tritonserver as well: its
``config.pbtxt`` files parse and the models get as far as looking for their backend; the
onnxruntime backend itself is not in the wheel, so they cannot run there.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import isplit
from isplit.cli import main
from isplit.deploy import Client, Manifest, TailServer

SERVER = Path(__file__).with_name("pytriton_tail.py")
N_IMAGES = 64
NO_BACKEND = "unable to find backend library for backend 'onnxruntime'"


def _pytriton_python() -> str:
    python = os.environ.get("ISPLIT_PYTRITON_PYTHON") or str(
        Path(sys.prefix) / "pytriton" / "bin" / "python"
    )
    if not Path(python).is_file():
        pytest.skip(
            f"no PyTriton environment at {python}: `make setup` makes it where the "
            "nvidia-pytriton wheel installs (Linux x86_64, glibc >= 2.35)"
        )
    probe = subprocess.run(
        [python, "-c", "import pytriton.triton, onnxruntime"], capture_output=True, text=True
    )
    if probe.returncode:
        why = (probe.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"PyTriton does not import in {python}: {why}")
    return python


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Triton:
    """``pytriton_tail.py ARGS`` in PyTriton's Python, its log in ``log``, until stopped."""

    def __init__(self, python: str, log: Path, *args: str) -> None:
        self.http, grpc, metrics = _free_ports(3)
        self.url = f"http://127.0.0.1:{self.http}"
        self.log = log
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                [python, str(SERVER), *args, str(self.http), str(grpc), str(metrics)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while "\nready\n" not in "\n" + log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"PyTriton did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def get(self, path: str, method: str = "GET") -> object:
        request = urllib.request.Request(self.url + path, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def python():
    return _pytriton_python()


@pytest.fixture(scope="module")
def triton(python, demo_export, tmp_path_factory):
    server = Triton(python, tmp_path_factory.mktemp("triton") / "log.txt", str(demo_export))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def data():
    demo = isplit.load_model("demo-vgg16")
    test_set = isplit.load_dataset("fashion-mnist", "test", demo.preprocess)
    images = torch.stack([test_set[i][0] for i in range(N_IMAGES)])
    with torch.no_grad():
        return test_set, images, demo.model(images).argmax(1).numpy()


def _predict(client: Client, images: torch.Tensor, batch: int = 16) -> np.ndarray:
    return np.concatenate(
        [client.infer(images[i : i + batch]).indices for i in range(0, len(images), batch)]
    )


def test_client_against_triton_predicts_like_the_unsplit_network(triton, demo_export, data):
    _, images, unsplit = data
    m = Manifest.load(demo_export)
    meta = triton.get(f"/v2/models/{m.name}")
    assert meta["platform"] == "python"  # PyTriton's, not isplit's server
    with Client(demo_export, triton.url, quantize=False) as client:
        assert (_predict(client, images) == unsplit).all()
        one = client.classify(images[:2], ["a", "b"])
        assert [p.index for p in one] == list(unsplit[:2]) and one[0].tail_ms is None
    with Client(demo_export, triton.url) as client, TailServer(demo_export) as own:
        eight_bit = _predict(client, images)
        with Client(demo_export, own.url) as isplit_client:
            assert (eight_bit == _predict(isplit_client, images)).all()  # as `isplit serve`
    assert (eight_bit == unsplit).mean() >= 0.98

    # The image cap is the export's max_batch_size: Triton refuses one image more.
    cap = json.loads((demo_export / "manifest.json").read_text()).get("max_batch_size", 64)
    with Client(demo_export, triton.url) as client:
        many = images[np.arange(cap + 1) % N_IMAGES]
        assert len(client.infer(many[:cap]).indices) == cap
        with pytest.raises(isplit.IsplitError, match="answered 400"):
            client.infer(many)


def test_cli_infer_against_triton(triton, demo_export, data, tmp_path, capsys):
    test_set, _, unsplit = data
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(test_set.images[i].numpy()).save(paths[-1])
    for wire in ([], ["--no-quantize"]):
        capsys.readouterr()
        argv = ["infer", str(demo_export), *paths, "--server", triton.url, "--json", *wire]
        assert main(argv) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [d["index"] for d in lines] == list(unsplit[:3]), wire
        assert all(d["tail_ms"] is None for d in lines)  # Triton does not report it


_PARSE = """
import sys
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

for path in sys.argv[1:]:
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(open(path).read(), config)
    except text_format.ParseError as e:
        print(path, "error", str(e).splitlines()[0])
    else:
        print(path, "ok", config.name, config.platform, config.max_batch_size)
"""


def test_the_exported_configurations_parse_as_tritons_model_config(python, demo_export, tmp_path):
    """CI's version of the next test: each exported config.pbtxt read as Triton reads it
    (protobuf text format, Triton's ModelConfig schema, from tritonclient in PyTriton's
    environment), without starting a server; a broken copy does not parse."""
    m = Manifest.load(demo_export)
    configs = [demo_export / "triton" / name / "config.pbtxt" for name in (m.name, m.int8_name)]
    broken = tmp_path / "config.pbtxt"
    broken.write_text(configs[0].read_text().replace("output [", "output ((", 1))
    done = subprocess.run(
        [python, "-c", _PARSE, *map(str, [*configs, broken])], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    for line, name in zip(lines, (m.name, m.int8_name)):
        assert line.split()[1:] == ["ok", name, "onnxruntime_onnx", str(m.max_batch_size)], line
    assert lines[2].startswith(f"{broken} error"), lines[2]


@pytest.mark.slow
def test_the_exported_model_repository_loads_in_tritonserver(python, demo_export, tmp_path):
    repository = Path(shutil.copytree(demo_export / "triton", tmp_path / "repository"))
    broken = repository / "broken"  # shows what a config.pbtxt that does not parse gets
    shutil.copytree(repository / Manifest.load(demo_export).name, broken)
    config = broken / "config.pbtxt"
    config.write_text(config.read_text().replace("output [", "output ((", 1))
    server = Triton(python, tmp_path / "log.txt", "--repository", str(repository))
    try:
        index = {m["name"]: m for m in server.get("/v2/repository/index", "POST")}
    finally:
        server.stop()
    log = (tmp_path / "log.txt").read_text()
    m = Manifest.load(demo_export)
    for name in (m.name, m.int8_name):
        assert index[name]["state"] == "UNAVAILABLE", index[name]
        assert NO_BACKEND in index[name]["reason"], index[name]
    assert "state" not in index["broken"]
    assert "failed to read text proto from" in log and f"{broken}/config.pbtxt" in log
