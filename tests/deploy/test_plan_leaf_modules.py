"""`plan` and `export` on a run analysed with --leaf-module: the run's points (a leaf module's
output, which is no cut of the fully traced graph) are cuts of the graph rebuilt with the run's
recorded leaf modules, not "unknown split point"."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from isplit.cli import main


class Block(nn.Module):
    """A convolution and its ReLU: traced through, its output is the node ``<name>.relu``;
    kept whole (--leaf-module Block), the node ``<name>``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x))


def make() -> nn.Module:
    """One grey channel, ten classes (Fashion-MNIST's), two blocks."""
    torch.manual_seed(0)
    return nn.Sequential(
        Block(1, 8), nn.MaxPool2d(2), Block(8, 16), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 10),
    )  # fmt: skip


@pytest.fixture(scope="module")
def leaf_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("leaf") / "run"
    argv = ["analyze", "--model", f"{__name__}:make", "--leaf-module", "Block", "--limit", "32",
            "--points", "0,2", "--out", str(run), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads((run / "curves.json").read_text())
    assert [p["name"] for p in doc["points"]] == ["0", "2"]  # leaf outputs: no cut without Block
    return run


def test_plan_times_the_points_of_a_leaf_module_run(leaf_run, tmp_path):
    argv = ["plan", str(leaf_run), "--bandwidth", "1MB/s", "--rtt", "15ms", "--repeats", "2",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads((tmp_path / "plan.json").read_text())["points"]
    assert [r["name"] for r in rows[1:-1]] == ["0", "2"]
    assert all(r["head_ms"] > 0 for r in rows[1:-1])


def test_export_at_a_leaf_module_run_s_best_and_rebuild_it(leaf_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from isplit.deploy.manifest import Manifest
    from isplit.deploy.runtime import load_programs

    out = tmp_path / "export"
    argv = ["export", "--analysis", str(leaf_run), "--point", "2", "--out", str(out),
            "--check-images", "4"]  # fmt: skip
    assert main(argv) == 0
    manifest = Manifest.load(out)
    assert manifest.point == "2" and manifest.model["leaf_modules"] == ["Block"]
    # the network rebuilt from the manifest and cut again at the leaf module's output
    (head,) = load_programs(out, manifest, ["head"], runtime="torch").values()
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    z = head(x)
    z = z[0] if isinstance(z, tuple | list) else z
    assert np.shape(z) == (2, 16, 14, 14)
