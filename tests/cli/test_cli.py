"""The command line, end to end on the demo, and its errors: one line on stderr, exit 2."""

import html
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

from helpers import user_error
from isplit.cli import main

ISPLIT = str(Path(sys.executable).with_name("isplit"))


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


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
    # by default CUI and pca-probe; 64 images hold out 9, too few for pca-probe to rank the
    # points: I-SPLIT's pick alone, the reason printed and recorded (both picks on more images:
    # tests/report/test_first_screen.py, tests/analysis/test_picks.py)
    assert doc["predictors"] == ["cui", "pca-probe"]
    picks = doc["picks"]
    assert picks["isplit"]["point"] == doc["best"] and picks["isplit"]["predictor"] == "cui"
    assert "evidence" not in picks and "9 held-out images" in picks["evidence_left_out"]
    (check,) = [c for c in doc["checks"] if c["name"] == "predictor_usable"]
    assert check["passed"] is False and check["values"]["held_out"] == 9
    assert "no evidence-backed pick: pca-probe was scored on 9 held-out images" in out
    assert "why the evidence-backed pick" not in out


def test_analyze_with_cui_alone_is_todays_pass(capsys, tmp_path):
    code, out, _ = run(capsys, "analyze", "--limit", "32", "--predictors", "cui",
                       "--out", str(tmp_path), "--quiet")  # fmt: skip
    assert code == 0
    doc = json.loads((tmp_path / "curves.json").read_text())
    assert doc["predictors"] == ["cui"] and "probe_ratio" not in doc["settings"]
    assert all("pca-probe" not in p for p in doc["points"])
    assert list(doc["picks"]) == ["isplit"] and doc["picks"]["isplit"]["point"] == doc["best"]
    assert f"best split: {doc['best']}" in out
    assert "pick" not in out and "pca-probe" not in out


def test_validate_measures_and_prints_both_picks(capsys, demo_run_copy):
    """analyze (the defaults: both picks), then validate at the picks' points: how each pick did,
    printed last, in validation.json, and in the report's validation section."""
    picks = json.loads((demo_run_copy / "curves.json").read_text())["picks"]
    isplit, evidence = picks["isplit"]["point"], picks["evidence"]["point"]
    limits = ["--train-limit", "400", "--test-limit", "100", "--epochs", "2", "--bootstrap", "10"]
    code, out, _ = run(
        capsys, "validate", "--analysis", str(demo_run_copy), "--points",
        *dict.fromkeys([isplit, evidence]), *limits, "--batch-size", "32", "--quiet",
    )  # fmt: skip
    assert code == 0
    doc = json.loads((demo_run_copy / "validation.json").read_text())
    acc = {p["name"]: p["accuracy"] for p in doc["points"]}
    assert doc["picks"]["isplit"] == {"predictor": "cui", "point": isplit, "accuracy": acc[isplit]}
    assert doc["picks"]["evidence"] == {
        "predictor": "pca-probe",
        "point": evidence,
        "accuracy": acc[evidence],
    }
    diff = acc[evidence] - acc[isplit]
    assert doc["picks"]["evidence_minus_isplit"] == pytest.approx(diff)
    if isplit == evidence:
        line = f"I-SPLIT's pick and the evidence-backed pick agree: {isplit}: accuracy "
        line += f"{acc[isplit]:.4f}"
    else:
        line = (
            f"I-SPLIT's pick {isplit}: accuracy {acc[isplit]:.4f}; evidence-backed pick "
            f"{evidence}: accuracy {acc[evidence]:.4f} ({100 * diff:+.2f} pp)"
        )
    printed = out.splitlines()
    assert printed[-2].removesuffix(" (unreliable)") == line  # before the "wrote" line
    assert main(["report", str(demo_run_copy), "--samples", "0"]) == 0
    page = (demo_run_copy / "report.html").read_text()
    section = page.split('<section id="validation">')[1].split("</section>")[0]
    assert f"<b>The picks, measured:</b> {html.escape(line)}" in section


def test_points_table_and_json(capsys):
    code, out, _ = run(capsys, "points", "--model", "demo-resnet50", "--json")
    assert code == 0
    doc = json.loads(out)
    names = [p["name"] for p in doc["points"]]
    assert names[:2] == ["relu", "maxpool"] and sum(n.startswith("layer") for n in names) == 16
    code, out, _ = run(capsys, "points", "--model", "resnet18", "--max-bytes", "40000")
    assert code == 0 and "layer3.0.relu_1" in out


def test_points_table_keeps_long_names_apart_and_shows_layouts(capsys):
    code, out, _ = run(
        capsys, "points", "--model", "vit_b_16", "--weights", "none", "--image-size", "224"
    )
    assert code == 0
    rows = out.splitlines()[2:]
    # every row splits into its eight columns at runs of two or more spaces
    cells = [[c for c in row.split("  ") if c.strip()] for row in rows]
    assert all(len(c) >= 8 for c in cells), rows
    by_name = {c[0].strip(): c for c in cells}
    last = by_name["encoder.layers.encoder_layer_10.add_1"]
    assert last[1].strip() == "add" and last[2].strip() == "NLC (+1 token)"
    assert last[3].strip() == "1x197x768" and last[-1].strip() == "yes"
    assert by_name["getitem_5"][-1].strip() == "no (one image position)"  # the class token


def test_console_script_error_has_no_traceback():
    proc = subprocess.run(
        [ISPLIT, "analyze", "--model", "resnet5O"], capture_output=True, text=True, timeout=120
    )
    assert "resnet50" in user_error(proc.returncode, proc.stderr)


def test_unknown_model(cli_error):
    assert "no-such-net" in cli_error("points", "--model", "no-such-net")


def test_weights_of_another_architecture(cli_error, tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    assert "does not fit" in cli_error("points", "--model", "vgg11", "--weights", str(path))


def test_weights_requested_offline(cli_error, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    err = cli_error("points", "--model", "resnet18", "--weights", "IMAGENET1K_V1")
    assert "checkpoints" in err


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


def test_missing_and_empty_data_folders(cli_error, tmp_path):
    out = str(tmp_path / "o")
    assert "nope" in cli_error("analyze", "--data", str(tmp_path / "nope"), "--out", out)
    (tmp_path / "empty").mkdir()
    assert "empty" in cli_error("analyze", "--data", str(tmp_path / "empty"), "--out", out)


def test_corrupt_image_is_named_and_can_be_skipped(capsys, cli_error, tmp_path):
    data = _folder(tmp_path / "imgs", bad=True)
    out = tmp_path / "run"
    argv = [
        "analyze",
        "--data",
        str(data),
        "--split",
        "all",
        "--out",
        str(out),
        "--quiet",
        "--match-classes",
        "position",
    ]
    err = cli_error(*argv, "--workers", "0")
    assert "broken.png" in err and "--skip-bad-images" in err
    code, _, err = run(capsys, *argv, "--skip-bad-images")
    assert code == 0
    doc = json.loads((out / "curves.json").read_text())
    assert doc["skipped_images"] == 1 and doc["dataset"]["images"] == 10
    assert doc["dataset"]["classes"] == ["cat", "dog"]


def test_untraceable_model(cli_error, tmp_path, monkeypatch):
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
    assert "cannot trace" in cli_error("points", "--model", "usernets:Net", "--image-size", "32")


def test_unknown_and_invalid_points(cli_error, tmp_path):
    args = ("analyze", "--limit", "8", "--out", str(tmp_path))
    assert "features.99" in cli_error(*args, "--points", "features.99")
    err = cli_error(*args, "--model", "demo-resnet50", "--points", "layer1.0.conv2")
    assert "not a valid cut" in err


def test_bad_image_size(cli_error):
    err = cli_error("points", "--model", "demo-vgg16", "--image-size", "4")
    # what follows "RuntimeError: " is torch's own wording
    assert err.startswith(
        "isplit: error: model does not run on an input of shape (1, 1, 4, 4) (RuntimeError: "
    )
    assert err.endswith("); check --image-size and the number of input channels")


@pytest.mark.slow
def test_full_demo(capsys, tmp_path):
    """The README's first command: all 10 000 Fashion-MNIST test images through demo-vgg16."""
    code, out, _ = run(capsys, "analyze", "--out", str(tmp_path), "--quiet")
    assert code == 0
    doc = json.loads((tmp_path / "curves.json").read_text())
    assert doc["model"] == "demo-vgg16" and doc["skipped_images"] == 0
    assert doc["dataset"]["name"] == "fashion-mnist" and doc["dataset"]["split"] == "test"
    assert doc["dataset"]["images"] == 10_000 and len(doc["dataset"]["classes"]) == 10
    names = [p["name"] for p in doc["points"]]
    with np.load(tmp_path / "per_image.npz") as npz:
        assert list(npz["points"]) == names
        cui, labels, predictions = npz["cui"], npz["labels"], npz["predictions"]
    assert cui.shape == (10_000, len(names)) and np.bincount(labels).tolist() == [1000] * 10
    assert doc["accuracy"] == pytest.approx((predictions == labels).mean())
    assert doc["accuracy"] > 0.9  # the packaged demo network is trained
    # the global curve is the mean of the per-image curves, a class's curve that of its images
    curve = np.array([p["cui"] for p in doc["points"]])
    tol = {"rtol": 1e-5, "atol": 1e-9 * curve.max()}
    np.testing.assert_allclose(cui.mean(0, dtype=np.float64), curve, **tol)
    for k, name in enumerate(doc["dataset"]["classes"]):
        np.testing.assert_allclose(cui[labels == k].mean(0, dtype=np.float64),
                                   doc["per_class"][name], **tol)  # fmt: skip
    admissible = [p for p in doc["points"] if p["admissible"]]
    assert doc["best"] == max(admissible, key=lambda p: p["cui"])["name"]
    assert set(doc["candidates"]) <= {p["name"] for p in admissible}
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert f"best split: {doc['best']}" in out
    assert f"wrote {tmp_path / 'curves.json'}, {tmp_path / 'per_image.npz'}" in out
