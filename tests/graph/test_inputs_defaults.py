"""A top-level forward with extra arguments (``forward(x, mask=None)``, as timm's Hiera) is traced
with those arguments at their defaults, as the model is called with the image alone: Python
control flow on them takes the branch the call takes, and the graph takes the image alone (no
placeholder and no guard node of fx's ``concrete_args`` is left)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from isplit import analyze
from isplit.graph import ModelGraph
from isplit.graph.capture import forward_defaults
from isplit.importance.reference import naive_cui


class Branches(nn.Module):
    """Every kind of simple default, each read by Python control flow."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x, mask=None, flip: bool = False, scale: float = 2.0, k: int = 1, pool="avg"):
        x = torch.relu(self.a(x))
        if mask is not None:  # a placeholder would take this branch
            x = x * mask
        if flip:  # a placeholder cannot be a condition
            x = -x
        x = torch.relu(self.b(x * scale)) + k
        x = x.mean((2, 3)) if pool == "avg" else x.amax((2, 3))
        return self.fc(x)


def _exact_everywhere(model: nn.Module, graph: ModelGraph, x: torch.Tensor) -> None:
    """The graph takes the image alone and computes the model's output, and so does head and
    tail at every valid cut."""
    assert [n.op for n in graph.gm.graph.nodes].count("placeholder") == 1
    guards = [n for n in graph.gm.graph.nodes if "assert" in str(n.target)]
    assert guards == []
    with torch.no_grad():
        want = model(x)
        torch.testing.assert_close(graph.gm(x), want, rtol=0, atol=0)
        for name in graph.all_cuts:
            head, tail = graph.split(name)
            torch.testing.assert_close(tail(head(x)), want, rtol=1e-5, atol=1e-5)


def test_extra_arguments_are_traced_at_their_defaults():
    torch.manual_seed(0)
    model = Branches().eval()
    graph = ModelGraph(model, (3, 8, 8), "all")
    _exact_everywhere(model, graph, torch.randn(2, 3, 8, 8))
    assert sum(p.admissible for p in graph.points) >= 2


def test_only_simple_defaults_of_named_arguments_are_fixed():
    class Many(nn.Module):
        def forward(self, x, need, t=torch.zeros(1), opt=None, *rest, n: int = 3, **kw):
            return x

    assert forward_defaults(Branches()) == {
        "mask": None,
        "flip": False,
        "scale": 2.0,
        "k": 1,
        "pool": "avg",
    }
    assert forward_defaults(Many()) == {"opt": None, "n": 3}


@pytest.mark.slow
def test_timm_hiera_takes_the_unmasked_branch():
    """It failed with "model does not run on an input of shape ...": its mask was traced as an
    input, so ``if mask is not None`` took the masked branch."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("hiera_tiny_224", pretrained=False, num_classes=4, img_size=64)
    nn.init.normal_(model.head.fc.weight, std=0.02)  # timm starts it at zero: no gradient
    model.eval()
    graph = ModelGraph(model, (3, 64, 64))
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3])
    _exact_everywhere(model, graph, x)
    run = analyze(model, TensorDataset(x, y), batch_size=2)
    admissible = [p.name for p in run.points if p.admissible]
    assert "patch_embed.proj" in admissible and run.best is not None
    chosen = admissible[:: max(1, len(admissible) // 3)]
    ref = naive_cui(model, x, y, chosen, graph=graph).mean(0)
    assert (ref > 0).all()
    ours = torch.tensor([run.cui[run.point_names.index(n)] for n in chosen], dtype=ref.dtype)
    torch.testing.assert_close(ours, ref, rtol=2e-4, atol=1e-12)


@pytest.mark.slow
def test_timm_hiera_blocks_are_admissible():
    """Its unroll merges position parts into the batch in rounds, then reshapes them back into
    tokens: the reshape of a merged batch axis follows its parts."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("hiera_tiny_224", pretrained=False, num_classes=4, img_size=64)
    points = ModelGraph(model.eval(), (3, 64, 64)).points
    blocks = [p for p in points if p.name.startswith("blocks.")]
    assert sum(p.admissible for p in blocks) > len(blocks) / 2
