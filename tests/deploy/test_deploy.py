"""Deployment end to end: export the demo network at its best split, serve the tail over the Open
Inference Protocol on loopback, run the head as a client on Fashion-MNIST test images; protocol
conformance with a client we did not write (tritonclient); bad input; export errors."""

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

import isplit
from isplit.analysis import Analysis
from isplit.cli import main
from isplit.data import FASHION_MNIST_CLASSES
from isplit.deploy import Client, Manifest, TailServer
from isplit.deploy.client import request_bytes
from isplit.deploy.export import export_split
from isplit.deploy.manifest import sha256_file
from isplit.deploy.runtime import load_programs
from isplit.graph import ModelGraph
from isplit.validation import Settings, bottleneck_file, validate
from isplit.validation.bottleneck import load_bottleneck, quantize_uint8
from serving import request as _request

N_IMAGES = 200


@pytest.fixture(scope="module")
def demo():
    return isplit.load_model("demo-vgg16")


@pytest.fixture(scope="module")
def test_set(demo):
    return isplit.load_dataset("fashion-mnist", "test", demo.preprocess)


@pytest.fixture(scope="module")
def images(test_set):
    return torch.stack([test_set[i][0] for i in range(N_IMAGES)])


@pytest.fixture(scope="module")
def unsplit(demo, images):
    with torch.no_grad():
        return demo.model(images).argmax(1).numpy()


@pytest.fixture(scope="module")
def run(demo_run):
    """The shared analysis of the demo network (read only here)."""
    return demo_run


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    """The demo network exported at the run's best split, through the command line."""
    out = tmp_path_factory.mktemp("deploy") / "exported"
    assert main(["export", "--analysis", str(run), "--out", str(out), "--check-images", "32"]) == 0
    return out


@pytest.fixture(scope="module")
def server(exported):
    with TailServer(exported, max_batch=8) as s:
        yield s


def _predict(client: Client, images: torch.Tensor, batch: int = 50) -> np.ndarray:
    return np.concatenate(
        [client.infer(images[i : i + batch]).indices for i in range(0, len(images), batch)]
    )


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def test_export_writes_a_checked_manifest_and_a_triton_repository(exported, run, demo, images):
    import onnxruntime as ort

    m = Manifest.load(exported)
    a = Analysis.load(run)
    assert m.point == a.best
    assert m.transmitted_shape == tuple(a.point(a.best).shape[1:])
    assert m.input_shape == (1, 32, 32) and m.preprocess == demo.preprocess.to_json()
    assert m.classes == FASHION_MNIST_CLASSES
    assert m.model["model"] == "demo-vgg16"
    assert m.model["weights_sha256"] == demo.fingerprint() == a.settings["weights_sha256"]
    assert m.checks["agreement"] == 1.0 and m.checks["inputs"] == "32 real inputs"
    assert m.accuracy["validation"] is None and m.accuracy["check_images"] == 32
    assert m.accuracy["split"] == m.accuracy["unsplit"] > 0.8  # labelled: accuracies recorded
    for key in ("head", "tail", "tail_int8", "end_to_end", "batch_1"):
        assert m.checks[f"{key}_max_abs_diff"] < 1e-4, key
    doc = json.loads((exported / "manifest.json").read_text())
    assert doc["transmitted"]["bytes_int8"] == m.transmitted_numel + 5
    assert doc["quantization"]["dequantize"] == "x = (q - zero_point) * scale"
    for name, digest in m.files.items():
        assert sha256_file(exported / name) == digest, name

    for model, onnx_file in ((m.name, "tail.onnx"), (m.int8_name, "tail_int8.onnx")):
        folder = exported / "triton" / model
        config = (folder / "config.pbtxt").read_text()
        assert f'name: "{model}"' in config and 'platform: "onnxruntime_onnx"' in config
        dims = ", ".join(map(str, m.transmitted_shape))
        assert 'name: "activation" data_type: ' in config and f"dims: [ {dims} ]" in config
        assert (folder / "1" / "model.onnx").read_bytes() == (exported / onnx_file).read_bytes()
        session = ort.InferenceSession(str(folder / "1" / "model.onnx"))
        assert [i.name for i in session.get_inputs()] == [t.name for t in m.inputs(model)]
        assert isinstance(session.get_inputs()[0].shape[0], str)  # a dynamic batch
    assert (
        "data_type: TYPE_UINT8 dims: [ 1 ]"
        in (exported / "triton" / m.int8_name / "config.pbtxt").read_text()
    )

    # The PyTorch programs are for users who stay in PyTorch: they run the same split.
    head = torch.export.load(exported / "head.pt2").module()
    tail = torch.export.load(exported / "tail.pt2").module()
    with torch.no_grad():
        torch.testing.assert_close(tail(head(images[:7])), demo.model(images[:7]))


def test_export_refuses_a_folder_that_holds_something_else(tmp_path, cli_error):
    (tmp_path / "notes.txt").write_text("mine")
    err = cli_error("export", "--point", "features.13", "--out", str(tmp_path))
    assert "holds files but no isplit export" in err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


_NETS = '''
import torch
from torch import nn


class ShapeLate(nn.Module):
    """Reads the batch size at the top of forward and uses it at the end."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        bs = x.size(0)
        y = torch.relu(self.conv(x))
        y = torch.relu(self.conv2(y))
        return self.fc(y.view(bs, -1))


class ShapeTwice(ShapeLate):
    """Reads twice the batch size at the top of forward and uses it at the end: a value beside
    the tensor that the tail cannot rebuild."""

    def forward(self, x):
        twice = x.size(0) * 2
        y = torch.relu(self.conv2(torch.relu(self.conv(x))))
        return self.fc(y.view(twice // 2, -1))


class CumMax(nn.Module):
    """A running maximum over the channels in the tail: no ONNX translation."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        y = torch.cummax(self.conv2(y), dim=1).values
        return self.fc(y.mean((2, 3)))


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        y = torch.relu(self.conv2(y))
        return self.fc(y.mean((2, 3)))
'''


@pytest.fixture
def nets(tmp_path, monkeypatch):
    """A module of small test networks, importable as ``deploynets``."""
    (tmp_path / "deploynets.py").write_text(_NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("deploynets", None)


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_export_refuses_cuts_that_carry_extra_values(nets, cli_error):
    import deploynets

    graph = ModelGraph(deploynets.ShapeTwice(), (3, 8, 8), "all")
    point = next(name for name, (_, extras) in graph.all_cuts.items() if extras)
    out = nets / "out"
    args = ("--model", "deploynets:ShapeTwice", "--weights", "none", "--image-size", "8")
    err = cli_error("export", *args, "--point", point, "--out", str(out))
    assert f"at {point} the network carries 1 value(s) besides the tensor (mul: neither" in err
    assert not out.exists() and _leftovers(nets) == []


def test_export_at_a_cut_where_the_batch_size_was_read_earlier(nets):
    """The batch size read at the top of forward is read from the tensor in the tail: the cut
    exports like any other, and the exported parts run at any batch size."""
    import deploynets

    graph = ModelGraph(deploynets.ShapeLate(), (3, 8, 8), "all")
    point = next(name for name, (_, extras) in graph.all_cuts.items() if extras)
    loaded = isplit.load_model("deploynets:ShapeLate", "none", image_size=8)
    m = export_split(loaded, point, nets / "out")
    run = load_programs(nets / "out", m, ["head", "tail"])
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        want = loaded.model(x).numpy()
    np.testing.assert_allclose(run["tail"](run["head"](x.numpy())), want, atol=1e-5)


def test_export_names_the_op_that_onnx_cannot_translate(nets, cli_error):
    out = nets / "out"
    args = ("--model", "deploynets:CumMax", "--weights", "none", "--image-size", "8")
    err = cli_error("export", *args, "--point", "relu", "--out", str(out))
    assert "cannot export the tail to ONNX: the operation aten.cummax" in err
    assert not out.exists() and _leftovers(nets) == []  # no half-written folder


def test_export_falls_back_to_torchscript_where_torch_export_fails(nets, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("data-dependent control flow")

    loaded = isplit.load_model("deploynets:Small", "none", image_size=8)
    monkeypatch.setattr(torch.export, "export", refuse)
    m = export_split(loaded, "relu", nets / "out")
    assert m.pytorch == {
        "head": {"file": "head.ts", "format": "torchscript"},
        "tail": {"file": "tail.ts", "format": "torchscript"},
    }
    assert m.checks["end_to_end_max_abs_diff"] < 1e-5 and m.checks["inputs"] == "16 random inputs"
    run = load_programs(nets / "out", m, ["head", "tail", "tail_int8"])
    x = torch.randn(3, 3, 8, 8)
    z = run["head"](x.numpy())
    q, scale, zp = (t.numpy() for t in quantize_uint8(torch.from_numpy(z)))
    with torch.no_grad():
        want = loaded.model(x).numpy()
    np.testing.assert_allclose(run["tail"](z), want, atol=1e-5)
    np.testing.assert_allclose(run["tail_int8"](q, scale, zp), want, atol=0.05)


# --------------------------------------------------------------------------------------------
# Serving: the split predicts like the whole network
# --------------------------------------------------------------------------------------------


def test_split_over_the_protocol_predicts_like_the_unsplit_model(exported, server, images, unsplit):
    with Client(exported, server.url, quantize=False) as client:
        assert (_predict(client, images) == unsplit).all()  # every image
    with Client(exported, server.url) as client:  # 8-bit code on the wire
        agreement = (_predict(client, images) == unsplit).mean()
    assert agreement >= 0.99, agreement
    with Client(exported, server.url, quantize=False, runtime="torch") as client:
        assert (_predict(client, images[:50]) == unsplit[:50]).all()


def test_client_reports_costs_per_image(exported, server, images, unsplit):
    m = Manifest.load(exported)
    with Client(exported, server.url) as client:
        predictions = client.classify(images[:3], ["a.png", "b.png", "c.png"])
        batch = client.infer(images[:5])
    for p, want in zip(predictions, unsplit):
        assert p.index == want and p.class_name == FASHION_MNIST_CLASSES[want]
        assert p.bytes == request_bytes(m.transmitted_shape, quantize=True)
        assert p.head_ms > 0 and p.rtt_ms >= p.tail_ms > 0
    assert [p.image for p in predictions] == ["a.png", "b.png", "c.png"]
    assert batch.parameters["batch_size"] >= 5 and batch.bytes == request_bytes(
        m.transmitted_shape, True, batch=5
    )


def test_cli_infer_prints_one_json_object_per_image(exported, server, test_set, unsplit, tmp_path,
                                                   capsys):  # fmt: skip
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(test_set.images[i].numpy()).save(paths[-1])
    capsys.readouterr()
    assert main(["infer", str(exported), *map(str, paths), "--server", server.url, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["index"] for d in lines] == list(unsplit[:3])
    assert [d["image"] for d in lines] == list(map(str, paths))
    assert set(lines[0]) == {"image", "class", "index", "bytes", "head_ms", "rtt_ms", "tail_ms"}
    assert main(["infer", str(exported), str(paths[0]), "--server", server.url]) == 0
    out = capsys.readouterr().out
    assert FASHION_MNIST_CLASSES[unsplit[0]] in out and "rtt ms" in out


def test_client_errors_are_clear(exported, tmp_path):
    with pytest.raises(isplit.IsplitError, match="cannot reach the server"):
        Client(exported, "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(isplit.IsplitError, match="give a URL"):
        Client(exported, "ftp://example.org")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    from isplit.deploy.client import load_images

    with pytest.raises(isplit.IsplitError, match="cannot read image"):
        load_images(Manifest.load(exported), [bad])


def test_concurrent_clients_are_batched_and_answered_right(exported, images, unsplit):
    # The torch runtime: the network rebuilt from its recorded weights, cut again.
    with TailServer(exported, max_batch=16, batch_wait_ms=200, runtime="torch") as server:
        start = threading.Barrier(6)

        def one(i):
            with Client(exported, server.url, quantize=False) as client:
                start.wait()
                r = client.infer(images[i : i + 1])
                return int(r.indices[0]), r.parameters["batch_size"]

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(one, range(6)))
    assert [r[0] for r in results] == list(unsplit[:6])
    assert max(r[1] for r in results) > 1


# --------------------------------------------------------------------------------------------
# Conformance: a client we did not write
# --------------------------------------------------------------------------------------------


def test_tritonclient_speaks_to_the_server(exported, server, images, unsplit):
    import tritonclient.http as triton

    m = Manifest.load(exported)
    client = triton.InferenceServerClient(server.url.split("://")[1])
    assert client.is_server_live() and client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    for model in m.served:
        assert client.is_model_ready(model)
        meta = client.get_model_metadata(model)
        assert meta["name"] == model
        assert meta["inputs"] == [t.to_json() for t in m.inputs(model)]
        assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]

    run = load_programs(exported, m, ["head"])["head"]
    z = run(images[:20].numpy())
    q, scale, zp = (t.numpy() for t in quantize_uint8(torch.from_numpy(z)))
    for binary in (False, True):
        inp = triton.InferInput("activation", list(z.shape), "FP32")
        inp.set_data_from_numpy(z, binary_data=binary)
        out = triton.InferRequestedOutput("logits", binary_data=binary)
        result = client.infer(m.name, [inp], outputs=[out])
        assert (result.as_numpy("logits").argmax(1) == unsplit[:20]).all()
        assert result.get_response()["parameters"]["tail_ms"] > 0

        inputs = []
        for name, dtype, array in (("activation", "UINT8", q), ("scale", "FP32", scale),
                                   ("zero_point", "UINT8", zp)):  # fmt: skip
            inputs.append(triton.InferInput(name, list(array.shape), dtype))
            inputs[-1].set_data_from_numpy(array, binary_data=binary)
        result = client.infer(m.int8_name, inputs)  # all outputs, binary by default
        assert (result.as_numpy("logits").argmax(1) == unsplit[:20]).mean() >= 0.95
    client.close()


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def _infer_body(inputs: list[dict], binary: bytes = b"") -> tuple[bytes, dict]:
    header = json.dumps({"inputs": inputs}).encode()
    headers = {"Authorization": "Bearer s3cret"}
    if binary:
        headers["Inference-Header-Content-Length"] = str(len(header))
    return header + binary, headers


def test_the_server_survives_bad_input(exported, images, unsplit):
    m = Manifest.load(exported)
    shape = [1, *m.transmitted_shape]
    n = m.transmitted_numel
    z = load_programs(exported, m, ["head"])["head"](images[:1].numpy())
    raw = z.astype("<f4").tobytes()

    def tensor(**change):
        d = {"name": "activation", "datatype": "FP32", "shape": shape,
             "parameters": {"binary_data_size": 4 * n}}  # fmt: skip
        d.update(change)
        return d

    path = f"/v2/models/{m.name}/infer"
    good = _infer_body([tensor()], raw)
    rng = np.random.default_rng(0)
    garbage = rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    cases = [
        ("wrong shape", path, _infer_body([tensor(shape=[1, 3, 3, 3],
                                                  parameters={"binary_data_size": 108})],
                                          raw[:108]), 400, "shape"),
        ("wrong dtype", path, _infer_body([tensor(datatype="FP64")], raw), 400, "datatype"),
        ("wrong name", path, _infer_body([tensor(name="x")], raw), 400, "unknown input 'x'"),
        ("truncated", path, _infer_body([tensor()], raw[: len(raw) // 2]), 400, "truncated"),
        ("extra bytes", path, _infer_body([tensor()], raw + b"\0" * 8), 400, "declare"),
        ("too large", path, (b"{" + b" " * (70 * 1024) + b"}", good[1]), 413, "at most"),
        ("random bytes", path, (garbage, good[1]), 400, "JSON"),
        ("random binary", path, (garbage, {**good[1], "Inference-Header-Content-Length": "77"}),
         400, "JSON"),
        ("bad header length", path, (good[0], {**good[1], "Inference-Header-Content-Length": "x"}),
         400, "byte count"),
        ("NaN in JSON", path, _infer_body([tensor(parameters={}, data=[float("nan")] * n)]), 400,
         "JSON"),
        ("too few values", path, _infer_body([tensor(parameters={}, data=[0.5] * 3)]), 400,
         "holds 3 values"),
        ("strings as data", path, _infer_body([tensor(parameters={}, data=["a"] * n)]), 400,
         "list of numbers"),
        ("missing input", f"/v2/models/{m.int8_name}/infer", _infer_body([tensor()], raw), 400,
         "missing input(s) scale, zero_point"),
        ("unknown model", "/v2/models/nope/infer", good, 404, "unknown model 'nope'"),
        ("unknown version", f"/v2/models/{m.name}/versions/7/infer", good, 404, "version"),
        ("unknown route", "/v3/anything", good, 404, "Not Found"),
        ("missing token", path, (good[0], {k: v for k, v in good[1].items()
                                           if k != "Authorization"}), 401, "token"),
        ("wrong token", path, (good[0], {**good[1], "Authorization": "Bearer guess"}), 401,
         "token"),
    ]  # fmt: skip
    with TailServer(exported, token="s3cret", max_request_bytes=64 * 1024) as server:
        for what, where, (body, headers), status, message in cases:
            got, resp_headers, text = _request(server.url, "POST", where, body, headers)
            assert got == status, (what, got, text[:300])
            error = json.loads(text)["error"]
            assert message in error, (what, error)
            assert _request(server.url, "GET", "/v2/health/live")[0] == 200, what
        got, _, text = _request(server.url, "GET", path, None, good[1])
        assert got == 405 and "error" in json.loads(text)
        # Still healthy and right afterwards.
        assert _request(server.url, "GET", "/v2/health/ready")[0] == 200
        got, resp_headers, text = _request(server.url, "POST", path, *good)
        assert got == 200, text[:300]
        doc = json.loads(text)
        assert int(np.argmax(doc["outputs"][0]["data"])) == unsplit[0]
        with Client(exported, server.url, token="s3cret") as client:
            assert client.classify(images[:2])[1].index == unsplit[1]
        with pytest.raises(isplit.IsplitError, match="pass the server's --token"):
            Client(exported, server.url)


# --------------------------------------------------------------------------------------------
# With the bottleneck of a small validation run
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validated(run, demo, test_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "validation"
    a = Analysis.load(run)
    train = isplit.load_dataset("fashion-mnist", "train", demo.preprocess)
    settings = Settings(epochs=2, train_limit=600, test_limit=200, batch_size=32, lr=0.01,
                        n_boot=10)  # fmt: skip
    validate(demo.model, a, train, test_set, out, points=[a.best], settings=settings)
    return out, settings


def test_validate_saves_each_trained_bottleneck(validated, run):
    out, settings = validated
    best = Analysis.load(run).best
    path = bottleneck_file(out, best)
    assert path.is_file()
    bottleneck, tail, md = load_bottleneck(path)
    assert tail is None and md["point"] == best and md["settings"]["epochs"] == settings.epochs
    assert md["settings"]["train_limit"] == 600 and md["model"] == "demo-vgg16"
    assert tuple(md["code_shape"]) == bottleneck.code_shape
    assert md["weights_sha256"] == isplit.load_model("demo-vgg16").fingerprint()


def test_the_bottleneck_split_serves_like_it_validated(validated, run, demo, images, server,
                                                      tmp_path):  # fmt: skip
    out, _ = validated
    best = Analysis.load(run).best
    exported = tmp_path / "exported"
    argv = ["export", "--bottleneck", str(out), "--analysis", str(run), "--out", str(exported),
            "--check-images", "16"]  # fmt: skip
    assert main(argv) == 0
    m = Manifest.load(exported)
    bottleneck, _, _ = load_bottleneck(bottleneck_file(out, best))
    assert m.transmitted_shape == bottleneck.code_shape and m.bottleneck["point"] == best
    assert m.accuracy["validation"]["learned"] is True  # else export refuses it
    assert m.accuracy["agreement_with_unsplit"] > 0.8 and m.accuracy["split"] > 0.7
    head, tail = ModelGraph(demo.model, (1, 32, 32), "all").split(best)
    with torch.no_grad():
        want = tail(bottleneck.decoder(bottleneck.encoder(head(images)))).argmax(1).numpy()
    assert (want == demo.model(images).argmax(1).numpy()).mean() > 0.8  # a working bottleneck
    with TailServer(exported) as bserver:
        with Client(exported, bserver.url, quantize=False) as client:
            assert (_predict(client, images) == want).all()
        with Client(exported, bserver.url) as client:
            agreement = (_predict(client, images) == want).mean()
            assert client.check_server()["parameters"]["point"] == best
        assert agreement >= 0.99, agreement
    with pytest.raises(isplit.IsplitError, match="serve this export folder there"):
        Client(exported, server.url)  # the plain export's server: another tensor


# --------------------------------------------------------------------------------------------
# The load benchmark, on a tiny setting
# --------------------------------------------------------------------------------------------


def test_serve_benchmark_tiny_run(exported, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "serve.py"
    spec = importlib.util.spec_from_file_location("serve_benchmark", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--export", str(exported), "--requests", "24", "--concurrency", "3", "--images", "8"]
    report = bench.main(argv)
    assert json.loads(capsys.readouterr().out) == report  # one JSON object on stdout
    assert set(report["settings"]) == {"fp32_batched", "fp32_unbatched", "int8_batched",
                                       "int8_unbatched"}  # fmt: skip
    for name, r in report["settings"].items():
        assert r["errors"] == 0 and r["requests_per_s"] > 0, name
        assert r["server_exit_code"] == 0, name  # drained on SIGTERM
        assert r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
        assert r["correct"] == 1.0 if name.startswith("fp32") else r["correct"] >= 0.8
    assert report["settings"]["fp32_unbatched"]["mean_batch_images"] == 1.0
    assert report["ratios"]["int8_bytes_vs_fp32"] < 0.5
