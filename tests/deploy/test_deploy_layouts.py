"""Deployment at points whose tensor is not N x C x H x W: a channels-last point inside a
ConvNeXt (N x H x W x C) and a token point of a vision transformer (N x L x D, a class token in
front): the parts and the manifest record the transmitted tensor's real shape and layout, the
export passes its onnxruntime checks (with the bottleneck trained there, at the token point also
with one that halved the patch grid, and without), and a served tail answers ``isplit infer`` as
the split network in PyTorch does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import isplit
from isplit.cli import main
from isplit.deploy import Manifest, TailServer
from isplit.deploy.parts import split_parts
from isplit.graph import ModelGraph
from isplit.validation import bottleneck_file
from isplit.validation.bottleneck import load_bottleneck

N_IMAGES = 8
#: name -> the transmitted tensor's layout at the validated point, without / with the bottleneck
LAYOUTS = {
    "convnext": ({"axes": "NHWC", "extra": None, "grid": [7, 7]}, {"axes": "NCHW"}),
    "vit": ({"axes": "NLC", "extra": [1, 1, 0], "grid": [4, 4]}, {"axes": "NCL1"}),
}
#: the code at the ViT's point with --halve: the class token, then the 2 x 2 halved patch grid
HALVED = {"axes": "NCL1", "extra": [2, 1, 0], "grid": [2, 2]}


@pytest.fixture(scope="module")
def test_set():
    pp = isplit.load_model("tiny_nets:vit", "none", image_size=28).preprocess
    return isplit.load_dataset("fashion-mnist", "test", pp)


def _export(tiny, out, *extra: str) -> Manifest:
    argv = ["export", "--analysis", str(tiny.run), "--point", tiny.point, "--out", str(out),
            "--check-images", "16", *extra]  # fmt: skip
    assert main(argv) == 0
    return Manifest.load(out)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_the_parts_record_the_real_shape_and_layout_of_what_crosses_the_link(tiny_runs, name):
    tiny = tiny_runs[name]
    loaded = isplit.load_model(tiny.model, str(tiny.weights))
    plain, coded = LAYOUTS[name]
    split = split_parts(loaded, tiny.point)
    shape = isplit.Analysis.load(tiny.run).point(tiny.point).shape
    assert split.transmitted_shape == tuple(shape[1:])
    assert {k: split.transmitted_layout.to_json()[k] for k in plain} == plain
    split = split_parts(loaded, tiny.point, bottleneck_file(tiny.validation, tiny.point))
    assert split.transmitted_layout.axes == coded["axes"]
    assert split.transmitted_shape[1:] == ((7, 7) if name == "convnext" else (17, 1))
    if tiny.halved:
        split = split_parts(loaded, tiny.point, bottleneck_file(tiny.halved, tiny.point))
        assert {k: split.transmitted_layout.to_json()[k] for k in HALVED} == HALVED
        assert split.transmitted_shape == (8, 5, 1)  # 32 channels / 4; 1 + 2 x 2 tokens


@pytest.mark.parametrize(
    "name,with_bottleneck",
    [
        ("convnext", True),
        ("vit", "halved"),
        pytest.param("vit", True, marks=pytest.mark.slow),
        pytest.param("vit", False, marks=pytest.mark.slow),
    ],
)  # CI exports the token point once (halved); the other two are checked as parts (above)
def test_export_passes_its_checks_and_a_served_tail_answers_isplit_infer(
    tiny_runs, name, with_bottleneck, test_set, tmp_path, capsys
):
    tiny = tiny_runs[name]
    exported = tmp_path / "exported"
    validation = tiny.halved if with_bottleneck == "halved" else tiny.validation
    flags = ["--bottleneck", str(validation)] if with_bottleneck else []
    m = _export(tiny, exported, *flags)
    assert m.checks["end_to_end_max_abs_diff"] < 1e-4  # the ONNX split is the PyTorch split
    # agreement: with the unsplit network (a bottleneck changes some predictions)
    assert m.checks["agreement"] == m.accuracy["agreement_with_unsplit"]
    assert m.checks["agreement"] >= (0.5 if with_bottleneck else 1.0)
    loaded = isplit.load_model(tiny.model, str(tiny.weights))
    head, tail = ModelGraph(loaded.model, (1, 28, 28), "all").split(tiny.point)
    layout = HALVED if with_bottleneck == "halved" else LAYOUTS[name][int(with_bottleneck)]
    assert {k: m.transmitted_layout[k] for k in layout} == layout
    doc = json.loads((exported / "manifest.json").read_text())
    assert doc["transmitted"]["layout"] == m.transmitted_layout
    assert doc["served_models"][m.name]["inputs"][0]["shape"] == [-1, *m.transmitted_shape]
    if with_bottleneck:
        bottleneck, _, md = load_bottleneck(bottleneck_file(validation, tiny.point))
        assert m.transmitted_shape == bottleneck.code_shape
        assert m.bottleneck["layout"] == md["layout"] == bottleneck.layout.to_json()
        head = torch.nn.Sequential(head, bottleneck.encoder)
        tail = torch.nn.Sequential(bottleneck.decoder, tail)
    else:
        assert m.transmitted_shape == tuple(head(torch.zeros(1, 1, 28, 28)).shape[1:])

    images = torch.stack([test_set[i][0] for i in range(N_IMAGES)])
    with torch.no_grad():
        want = tail(head(images)).argmax(1).numpy()
    paths = []
    for i in range(N_IMAGES):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(test_set.images[i].numpy()).save(paths[-1])
    with TailServer(exported) as server:
        for flags in ([], ["--no-quantize"]):
            capsys.readouterr()
            argv = ["infer", str(exported), *map(str, paths), "--server", server.url, "--json"]
            assert main([*argv, *flags]) == 0
            lines = capsys.readouterr().out.splitlines()
            got = np.array([json.loads(line)["index"] for line in lines])
            agreement = (got == want).mean()
            assert agreement == 1.0 if flags else agreement >= 0.75, (flags, got, want)
