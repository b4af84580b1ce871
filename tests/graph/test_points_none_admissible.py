"""When no split point is admissible and no budget was given, the message says why (every
point's layout unknown, or one image position) and what to try; it speaks of a budget only when
one was given (it once said "relax the budget" to TNT and CrossViT users who gave none)."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from isplit.graph import ModelGraph, no_admissible_message, restrict

NO_BUDGET = {"max_bytes": None, "max_head_flops": None, "first": None, "last": None}


class Pooled(nn.Module):
    """The image is pooled to one position first: every point is a vector."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.mean((2, 3)))))


class BatchMoved(nn.Module):
    """The batch moved off the first axis: every point's layout is unknown."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3, 1, 1, 1))
        self.fc = nn.Parameter(torch.randn(3, 10))

    def forward(self, x):
        y = torch.relu(x.transpose(0, 1) * self.scale)  # [C, N, H, W]
        return torch.einsum("cn,ck->nk", y.mean((2, 3)), self.fc)


def _message(model: nn.Module, budget: dict) -> str:
    points = ModelGraph(model.eval(), (3, 8, 8)).points
    restrict(points, **budget)
    assert points and not any(p.admissible for p in points)
    return no_admissible_message(points, budget)


def test_every_point_one_image_position():
    message = _message(Pooled(), NO_BUDGET)
    assert message.startswith("no split point is admissible: every point has one image position")
    assert "--image-size" in message and "budget" not in message


def test_every_layout_unknown():
    message = _message(BatchMoved(), NO_BUDGET)
    assert message.startswith("no split point is admissible: every point's layout is unknown")
    assert "(first reason: " in message and "the batch is not axis 0" in message
    assert "--leaf-module" in message and "--granularity" in message and "bug" in message
    assert "budget" not in message


def test_a_budget_given_is_not_blamed_for_what_it_did_not_do():
    message = _message(BatchMoved(), {**NO_BUDGET, "max_bytes": 10})
    assert message.startswith("no split point is admissible, whatever the budget (--max-bytes 10)")
    assert "relax" not in message


@pytest.mark.parametrize(
    "factory, why",
    [
        (Pooled, "every point has one image position"),
        (BatchMoved, "every point's layout is unknown"),
    ],
)
def test_analyze_says_why_in_one_line(factory, why, monkeypatch, tmp_path, cli_error):
    module = types.ModuleType("isplit_test_none_admissible")
    module.make = factory
    monkeypatch.setitem(sys.modules, module.__name__, module)
    model = ["--model", f"{module.__name__}:make", "--image-size", "8", "--data", "digits"]
    out = ["--limit", "16", "--quiet", "--out", str(tmp_path / "run")]
    message = cli_error("analyze", *model, *out)
    assert why in message and "budget" not in message
