"""export checks the analysis it comes from: on its labelled check images it measures the unsplit
network's accuracy; against chance and against the analysis' accuracy, beyond sampling. Each
number against a plain forward pass of the network in the test."""

from __future__ import annotations

import pytest
import torch

import isplit
from isplit.checks import from_json
from isplit.data import builtin
from isplit.deploy.export import check_images, export_split

pytest.importorskip("onnxruntime")
HAVE_FMNIST = (builtin.FASHION_MNIST_SYSTEM_DIR / "t10k-images-idx3-ubyte.gz").is_file()
pytestmark = pytest.mark.skipif(not HAVE_FMNIST, reason="dataset-fashion-mnist not installed")


def test_export_flags_an_analysis_its_network_disagrees_with(tmp_path):
    loaded = isplit.load_model("demo-vgg16")
    x, y, _ = check_images(loaded, "fashion-mnist", "test", None, 200)
    with torch.no_grad():
        right = (loaded.model(x).argmax(1) == y).float().mean().item()  # independent
    assert right > 0.85
    # an analysis that measured what this network measures: nothing flagged
    m = export_split(loaded, "features.23", tmp_path / "ok", check_inputs=x, check_labels=y,
                     analysis_accuracy=(right, 1000))  # fmt: skip
    found = {c.name: c for c in from_json(m.checks["self_checks"])}
    assert all(c.passed for c in found.values()) and set(found) == {
        "accuracy_vs_chance", "reused_analysis_accuracy"}  # fmt: skip
    assert found["reused_analysis_accuracy"].values["measured"] == pytest.approx(right)
    assert m.accuracy["unsplit"] == pytest.approx(right)
    # labels of other classes (an analysis on another data set, another class order)
    wrong = (y + 1) % 10
    m = export_split(loaded, "features.23", tmp_path / "bad", check_inputs=x, check_labels=wrong,
                     analysis_accuracy=(right, 1000))  # fmt: skip
    found = {c.name: c for c in from_json(m.checks["self_checks"])}
    assert not found["accuracy_vs_chance"].passed
    assert not found["reused_analysis_accuracy"].passed
    assert "export measures" in found["reused_analysis_accuracy"].message
    saved = isplit.deploy.manifest.Manifest.load(tmp_path / "bad")
    assert saved.checks["self_checks"] == m.checks["self_checks"]
