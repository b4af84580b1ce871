"""The predictor registry: torch-free names, descriptions and labels (with the run's pca-probe
ratio), and the one place where a new predictor class is registered."""

import subprocess
import sys

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from isplit.analysis import analyze
from isplit.importance import registry
from isplit.importance.predictors import PREDICTORS, Predictor, PredictorSet
from isplit.importance.registry import PredictorInfo, predictor_label, predictor_names


def test_the_registry_is_torch_free_and_names_every_predictor_once():
    code = "import sys, isplit.importance.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert predictor_names()[0] == "cui" and "cui" not in predictor_names(include_cui=False)
    assert list(PREDICTORS) == predictor_names()  # the descriptions come from the registry
    for name in predictor_names(include_cui=False):
        cls = registry.predictor_class(name)
        assert cls.name == name and isinstance(cls(3, 2), Predictor)


def test_labels_show_the_runs_probe_ratio():
    assert predictor_label("pca-probe", 4) == "probe on channels / 4 principal components"
    assert predictor_label("pca-probe") == "probe on channels / 8 principal components"
    assert predictor_label("cui", 4) == "CUI (I-SPLIT)"
    assert predictor_label("depth") == "depth"  # not a predictor of the analysis


class MeanActivation:
    """A new predictor: the mean pooled activation per point (one class, registered once)."""

    name = "mean-activation"
    needs = ("pooled",)
    shares_state_with = None

    def __init__(self, num_points: int, num_classes: int) -> None:
        self.sums, self.count = np.zeros(num_points), 0

    def add(self, batch, labels, index) -> None:
        self.sums += np.array([float(p.mean(1).sum()) for p in batch.extras["pooled"]])
        self.count += len(labels)

    def merge(self, other):
        self.sums, self.count = self.sums + other.sums, self.count + other.count
        return self

    def state(self):
        return {"sums": self.sums, "count": np.array(self.count)}

    def load_state(self, state) -> None:
        self.sums, self.count = state["sums"], int(state["count"])

    def values(self, options=None):
        return self.sums / self.count


def test_a_predictor_registered_in_one_place_is_computed_by_the_analysis(monkeypatch):
    info = PredictorInfo(
        "mean-activation", "mean pooled activation", "mean", f"{__name__}:MeanActivation"
    )
    monkeypatch.setitem(registry.PREDICTORS, info.name, info)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()
    x, y = torch.randn(12, 1, 6, 6), torch.randint(0, 3, (12,))
    run = analyze(model, TensorDataset(x, y), batch_size=5, predictors="mean-activation")
    with torch.no_grad():
        expected = [float(model[: int(name) + 1](x).mean()) for name in run.point_names]
    assert run.point_names == ["1", "2", "3"]
    np.testing.assert_allclose(run.predictors["mean-activation"], expected, rtol=1e-5)
    assert run.curve("mean-activation") is run.predictors["mean-activation"]
    assert PredictorSet(["mean-activation", "taylor"], 2, 3).needs == ("pooled", "taylor")
