"""The command line, end to end on the demo, and its errors: one line on stderr, exit 2."""

import json
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from isplit.cli import main

ISPLIT = str(Path(sys.executable).with_name("isplit"))


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("isplit: error:"), err
    for w in words:
        assert w in lines[0], lines[0]


def test_analyze_demo_end_to_end(capsys, tmp_path):
    code, out, _ = run(
        capsys, "analyze", "--limit", "64", "--batch-size", "32", "--out", str(tmp_path), "--quiet"
    )
    assert code == 0
    doc = json.loads((tmp_path / "curves.json").read_text())
    assert doc["model"] == "demo-vgg16"
    assert doc["dataset"]["name"] == "fashion-mnist" and doc["dataset"]["images"] == 64
    assert len(doc["dataset"]["classes"]) == 10
    assert {"target", "reduction", "protocol", "batch_size"} <= doc["settings"].keys()
    names = [p["name"] for p in doc["points"]]
    assert len(names) >= 18  # 13 conv + 5 pool stages, then the classifier
    for p in doc["points"]:
        assert {"name", "shape", "bytes", "head_flops", "admissible", "cui"} <= p.keys()
    assert doc["best"] in names and set(doc["candidates"]) <= set(names)
    assert all(len(v) == len(names) for v in doc["per_class"].values())
    with np.load(tmp_path / "per_image.npz") as npz:
        assert npz["cui"].shape == (64, len(names))
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert f"best split: {doc['best']}" in out
    assert doc["accuracy"] > 0.8  # the demo network is trained


def test_points_table_and_json(capsys):
    code, out, _ = run(capsys, "points", "--model", "demo-resnet50", "--json")
    assert code == 0
    doc = json.loads(out)
    names = [p["name"] for p in doc["points"]]
    assert names[:2] == ["relu", "maxpool"] and sum(n.startswith("layer") for n in names) == 16
    code, out, _ = run(capsys, "points", "--model", "resnet18", "--max-bytes", "40000")
    assert code == 0 and "layer3.0.relu_1" in out


def test_console_script_error_has_no_traceback():
    proc = subprocess.run(
        [ISPLIT, "analyze", "--model", "resnet5O"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("isplit: error:") and "resnet50" in proc.stderr


def test_unknown_model(capsys):
    assert_user_error(*run(capsys, "points", "--model", "no-such-net")[::2], "no-such-net")


def test_weights_of_another_architecture(capsys, tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    code, _, err = run(capsys, "points", "--model", "vgg11", "--weights", str(path))
    assert_user_error(code, err, "does not fit")


def test_weights_requested_offline(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    code, _, err = run(capsys, "points", "--model", "resnet18", "--weights", "IMAGENET1K_V1")
    assert_user_error(code, err, "checkpoints")


def _folder(root: Path, bad: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(5):
            img = rng.integers(0, 255, (28, 28), dtype=np.uint8)
            Image.fromarray(img).save(root / cls / f"{i}.png")
    if bad:
        (root / "dog" / "broken.png").write_bytes(b"not an image at all")
    return root


def test_missing_and_empty_data_folders(capsys, tmp_path):
    code, _, err = run(
        capsys, "analyze", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")
    )
    assert_user_error(code, err, "nope")
    (tmp_path / "empty").mkdir()
    code, _, err = run(
        capsys, "analyze", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")
    )
    assert_user_error(code, err, "empty")


def test_corrupt_image_is_named_and_can_be_skipped(capsys, tmp_path):
    data = _folder(tmp_path / "imgs", bad=True)
    out = tmp_path / "run"
    code, _, err = run(
        capsys, "analyze", "--data", str(data), "--out", str(out), "--workers", "0", "--quiet"
    )
    assert_user_error(code, err, "broken.png", "--skip-bad-images")
    code, _, err = run(
        capsys, "analyze", "--data", str(data), "--out", str(out), "--skip-bad-images", "--quiet"
    )
    assert code == 0
    doc = json.loads((out / "curves.json").read_text())
    assert doc["skipped_images"] == 1 and doc["dataset"]["images"] == 10
    assert doc["dataset"]["classes"] == ["cat", "dog"]


def test_untraceable_model(capsys, tmp_path, monkeypatch):
    (tmp_path / "usernets.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.c = torch.nn.Conv2d(1, 10, 3)\n"
        "    def forward(self, x):\n"
        "        if x.mean() > 0:\n"
        "            x = -x\n"
        "        return self.c(x).mean((2, 3))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = run(capsys, "points", "--model", "usernets:Net", "--image-size", "32")
    assert_user_error(code, err, "cannot trace")


def test_unknown_and_invalid_points(capsys, tmp_path):
    code, _, err = run(
        capsys, "analyze", "--points", "features.99", "--limit", "8", "--out", str(tmp_path)
    )
    assert_user_error(code, err, "features.99")
    code, _, err = run(
        capsys,
        "analyze",
        "--model",
        "demo-resnet50",
        "--points",
        "layer1.0.conv2",
        "--limit",
        "8",
        "--out",
        str(tmp_path),
    )
    assert_user_error(code, err, "not a valid cut")


def test_bad_image_size(capsys):
    code, _, err = run(capsys, "points", "--model", "demo-vgg16", "--image-size", "4")
    assert code == 2 and "Traceback" not in err


@pytest.mark.slow
def test_full_demo(capsys, tmp_path):
    code, _, _ = run(capsys, "analyze", "--out", str(tmp_path), "--quiet")
    assert code == 0
