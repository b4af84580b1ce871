"""A point before anything learned (the input through dropout, padding, a fixed pooling) sends
the image: it is the "send the image" option every split is weighed against, not a split. It is
listed, says why it is not admissible, and no range (``--first``) makes it admissible."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from isplit.cli.main import main
from isplit.graph import ModelGraph, restrict
from isplit.graph.points import why_not_admissible


class ImageFirst(nn.Module):
    """Dropout, padding and a fixed pooling of the image before the first convolution."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.1)
        self.pool = nn.AvgPool2d(2)
        self.conv = nn.Conv2d(channels, 8, 3)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = nn.functional.pad(self.drop(x), (1, 1, 1, 1))
        x = torch.relu(self.conv(self.pool(x)))
        return self.fc(x.mean((2, 3)))


IMAGE = ["drop", "pad", "pool"]


def test_the_image_through_fixed_ops_is_no_split():
    points = ModelGraph(ImageFirst().eval(), (3, 16, 16), "all").points
    by_name = {p.name: p for p in points}
    assert [p.name for p in points][:3] == IMAGE
    for name in IMAGE:
        p = by_name[name]
        assert p.spatial and p.sends_image and not p.admissible, name
        assert why_not_admissible(p).startswith("sends the image"), name
    assert by_name["conv"].admissible and not by_name["conv"].sends_image
    restrict(points, first="drop")  # a range cannot make it admissible
    assert [p.name for p in points if p.admissible][0] == "conv"
    assert not any(by_name[n].admissible for n in IMAGE)


def test_isplit_points_lists_it_as_not_admissible(monkeypatch, capsys):
    module = types.ModuleType("isplit_test_image_first")
    module.make = lambda: ImageFirst(channels=1)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    model = ["--model", f"{module.__name__}:make", "--image-size", "8"]
    assert main(["points", *model, "--granularity", "all"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    for name in IMAGE:
        assert "no (sends the image" in rows[name], rows[name]
    assert rows["conv"].rstrip().endswith("yes")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, granularity, first",
    [("efficientvit_b0", "layer", "stem.in_conv.dropout"), ("davit_tiny", "all", "stem.pad")],
)
def test_timm_models_offer_no_input_like_point(name, granularity, first):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=4).eval()
    points = ModelGraph(model, (3, 64, 64), granularity).points
    assert points[0].name == first and points[0].shape == (1, 3, 64, 64)
    assert not any(p.admissible for p in points if p.sends_image)
    assert all(p.head_params > 0 for p in points if p.admissible)
    assert why_not_admissible(points[0]).startswith("sends the image")
    assert points[1].admissible


class FixedFilters(nn.Module):
    """A fixed filter bank (weights held as a buffer, as a frozen front-end may be) before the
    first learned layer: it computes features, so a cut after it is a split."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("bank", torch.randn(6, 3, 3, 3, generator=torch.Generator()))
        self.conv = nn.Conv2d(6, 8, 3)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(nn.functional.conv2d(x, self.bank, padding=1))
        x = torch.relu(self.conv(x))
        return self.fc(x.mean((2, 3)))


def test_fixed_filters_held_as_buffers_are_a_split():
    points = ModelGraph(FixedFilters().eval(), (3, 16, 16)).points
    first = points[0]
    assert first.head_params == 0 and first.head_flops > 0
    assert not first.sends_image and first.admissible, why_not_admissible(first)


class Patches(nn.Module):
    """The image unfolded into patches (TNT) before a learned layer: the patches are the image,
    although a parameter (a position embedding) comes first in the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(1, 16, 48))
        self.unfold = nn.Unfold(4, stride=4)
        self.proj = nn.Linear(48, 8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        pos = self.pos * 1.0
        x = self.unfold(x).transpose(1, 2)
        x = torch.relu(self.proj(x + pos))
        return self.fc(x.mean(1))


def test_the_image_unfolded_into_patches_is_no_split():
    by_name = {p.name: p for p in ModelGraph(Patches().eval(), (3, 16, 16), "all").points}
    assert by_name["unfold"].head_params > 0  # the embedding is in the head...
    assert by_name["unfold"].sends_image and not by_name["unfold"].admissible  # ...not in it
    assert by_name["proj"].admissible
