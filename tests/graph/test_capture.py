"""Capture: submodules that torch.fx cannot trace into are kept whole automatically (timm's
MobileViT and EfficientViT, the gated test net), recorded, and named in a warning; where that does
not help (the top-level forward), a clear error names the module and the remedy."""

import re

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import isplit.graph.capture as capture
from gated_model import Gate, Gated
from isplit import IsplitError, analyze
from isplit.graph import ModelGraph, split_model, split_points

timm = pytest.importorskip("timm")


def _exact_at(model: nn.Module, graph: ModelGraph, names, x: torch.Tensor) -> None:
    with torch.no_grad():
        ref = model(x)
        for name in names:
            head, tail = graph.split(name)
            assert torch.equal(tail(head(x)), ref), name


def test_an_untraceable_submodule_is_kept_whole_and_named(caplog):
    torch.manual_seed(0)
    model = Gated().eval()
    with caplog.at_level("WARNING", logger="isplit"):
        graph = ModelGraph(model, (3, 8, 8), granularity="all")
    assert graph.auto_leaf_modules == (Gate,) and graph.leaf_modules == ()
    assert "cannot trace into gated_model.Gate (1x: gate)" in caplog.text
    assert "no split point falls inside" in caplog.text and len(caplog.records) == 1
    assert "gate" in graph.all_cuts
    _exact_at(model, graph, graph.all_cuts, torch.randn(2, 3, 8, 8))
    assert [p.name for p in split_points(model, (3, 8, 8))] == ["r1", "gate", "r2", "mean"]
    # kept whole as the user's leaf module: nothing is found automatically
    assert ModelGraph(model, (3, 8, 8), leaf_modules=["Gate"]).auto_leaf_modules == ()


class Inner(nn.Module):
    def forward(self, x):
        return x if x.amax() > 0 else -x


class Outer(nn.Module):
    """Untraceable in itself and around its untraceable submodule."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.inner = Inner()

    def forward(self, x):
        y = self.inner(self.conv(x))
        return y * 2 if y.mean() > 0 else y


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())
        self.outer = Outer()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.outer(self.stem(x)).mean((2, 3)))


def test_a_failure_that_moves_outwards_keeps_the_enclosing_class_whole(monkeypatch):
    torch.manual_seed(0)
    model = Net().eval()
    graph = ModelGraph(model, (3, 8, 8), granularity="all")
    assert graph.auto_leaf_modules == (Outer,)  # Inner is no node: only inside Outer
    assert "outer" in graph.all_cuts and not any(n.startswith("outer.") for n in graph.all_cuts)
    _exact_at(model, graph, graph.all_cuts, torch.randn(2, 3, 8, 8))
    # bounded: out of rounds, the error names the module that still fails and the remedy
    monkeypatch.setattr(capture, "MAX_ROUNDS", 1)
    with pytest.raises(IsplitError) as e:
        ModelGraph(model, (3, 8, 8))
    message = str(e.value)
    assert re.search(
        r"cannot trace Net with torch.fx: 'outer' \(\S*test_capture.Outer\) fails", message
    )
    assert "already kept whole: Inner" in message and "--leaf-module CLASS" in message


class TopLevel(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow in the model's own forward
            return self.c(x).mean((2, 3))
        return self.c(-x).mean((2, 3))


def test_an_untraceable_top_level_forward_is_a_clear_error():
    with pytest.raises(IsplitError) as e:
        ModelGraph(TopLevel(), (3, 8, 8))
    message = str(e.value)
    assert "cannot trace TopLevel with torch.fx: its own forward" in message
    assert "test_capture.TopLevel)" in message and "--leaf-module CLASS" in message
    assert "TraceError: symbolically traced variables" in message and "\n" not in message


# The smallest inputs these accept; kept whole: MobileViT's transformer blocks (they fold their
# input to patches only if its size differs), EfficientViT's attention (it branches on a device).
TIMM = [
    ("mobilevit_xxs", 64, "timm.models.mobilevit.MobileVitBlock", ["stages.2.1", "stages.3.1"]),
    (
        "efficientvit_b0",
        64,
        "timm.models.efficientvit_mit.LiteMLA",
        ["stages.3.blocks.1.local_module.add"],
    ),
]


@pytest.mark.parametrize("name,size,kept,inside", TIMM, ids=[t[0] for t in TIMM])
def test_timm_models_that_fx_cannot_trace_as_they_are(name, size, kept, inside):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=5).eval()
    shape = (3, size, size)
    graph = ModelGraph(model, shape, granularity="all")
    assert [f"{c.__module__}.{c.__qualname__}" for c in graph.auto_leaf_modules] == [kept]
    points = split_points(model, shape)
    admissible = [p.name for p in points if p.admissible]
    assert len(admissible) >= 20 and set(inside) <= {p.name for p in points}
    x = torch.randn(2, *shape)
    picks = [admissible[1], *inside, admissible[-1]]
    _exact_at(model, graph, picks, x)
    head, tail = split_model(model, inside[0], shape)
    with torch.no_grad():
        assert torch.equal(tail(head(x)), model(x))
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(4, *shape, generator=g), torch.arange(4) % 5)
    run = analyze(model, data, batch_size=4)
    assert run.settings["auto_leaf_modules"] == [kept] and "leaf_modules" not in run.settings
    assert run.leaf_modules == [kept]  # what rebuilds the run's graph
    assert run.point_names == [p.name for p in points] and run.best in admissible
    assert ModelGraph(model, shape, leaf_modules=run.leaf_modules).auto_leaf_modules == ()


class Unregistered(nn.Module):
    """Calls a module that is not its submodule (held in a plain list): traced through."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.acts = [nn.ReLU()]

    def forward(self, x):
        return self.acts[0](self.conv(x)).mean((2, 3))


def test_a_module_that_is_no_submodule_is_traced_through():
    model = Unregistered().eval()
    graph = ModelGraph(model, (3, 8, 8), granularity="all")
    assert graph.auto_leaf_modules == () and "relu" in graph.all_cuts
    _exact_at(model, graph, ["relu"], torch.randn(2, 3, 8, 8))
