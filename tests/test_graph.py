"""Valid cuts, head/tail splitting, sizes and FLOPs."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from isplit import IsplitError
from isplit.graph import ModelGraph, split_model, split_points


def _check_all_cuts(model, shape):
    model.eval()
    graph = ModelGraph(model, shape, granularity="all")
    x = torch.randn(2, *shape)
    with torch.no_grad():
        ref = model(x)
        for name in graph.all_cuts:
            head, tail = graph.split(name)
            assert torch.equal(tail(head(x)), ref), name
    return graph


@pytest.mark.parametrize("name,size", [("resnet50", 64), ("vgg16", 32), ("densenet121", 64)])
def test_head_tail_reproduce_logits_at_every_valid_cut(name, size):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None)
    graph = _check_all_cuts(model, (3, size, size))
    assert len(graph.all_cuts) >= 10


def test_no_resnet_cut_inside_a_residual_block():
    graph = ModelGraph(torchvision.models.resnet50(weights=None), (3, 64, 64), "all")
    node_names = [graph.names[n] for n in graph.nodes]
    inside = 0
    for name in graph.all_cuts:
        parts = name.split(".")
        if parts[0].startswith("layer") and len(parts) > 2:
            # Within a block, only after the skip connection has joined (add, then relu).
            join = node_names.index(".".join(parts[:2]) + ".add")
            assert node_names.index(name) >= join, f"{name} cuts a residual block"
            inside += 1
    assert inside == 2 * 16
    points = [p.name for p in split_points(torchvision.models.resnet50(), (3, 64, 64))]
    assert sum(p.startswith("layer") for p in points) == 16  # one per bottleneck block
    assert points[:2] == ["relu", "maxpool"]  # conv -> bn -> relu is one point


def test_layer_granularity_cuts_after_the_activation():
    points = [p.name for p in split_points(torchvision.models.vgg11(), (3, 32, 32))]
    assert points[:3] == ["features.1", "features.2", "features.4"]
    assert "features.0" not in points  # conv output: its relu follows


class ShapeLate(nn.Module):
    """Reads the batch size at the top of forward and uses it at the end, with in-place ops."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        bs = x.size(0)
        h = F.relu(self.c1(x), inplace=True)
        h = F.max_pool2d(h, 2)
        y = self.c2(h)
        y.add_(h)  # in-place residual
        y = torch.relu_(y)
        y = F.adaptive_avg_pool2d(y, 4)
        return self.fc(y.view(bs, -1))


def test_small_values_crossing_a_cut_travel_with_the_tensor():
    torch.manual_seed(0)
    model = ShapeLate().eval()
    graph = _check_all_cuts(model, (3, 8, 8))
    names = [p.name for p in graph.points]
    assert "max_pool2d" in names and "adaptive_avg_pool2d" in names
    head, tail = split_model(model, "adaptive_avg_pool2d", (3, 8, 8))
    payload = head(torch.randn(3, 3, 8, 8))
    assert isinstance(payload, tuple) and payload[0].shape == (3, 8, 4, 4) and payload[1] == 3


def test_inplace_ops_are_rewritten_in_the_traced_copy_only():
    model = torchvision.models.resnet18()
    graph = ModelGraph(model, (3, 32, 32))
    assert model.relu.inplace is True  # the user's model is untouched
    assert graph.gm.get_submodule("relu").inplace is False


def test_sizes_and_flops():
    model = torchvision.models.resnet18()
    graph = ModelGraph(model, (3, 224, 224))
    for p in graph.points:
        n = 1
        for s in p.shape:
            n *= s
        assert p.bytes == 4 * n
    flops = [p.head_flops for p in graph.points]
    assert flops == sorted(flops)
    # resnet18 at 224 px: 1.82 GMACs = 3.64 GFLOPs
    assert 3.5e9 < graph.total_flops < 3.8e9
    params = [p.head_params for p in graph.points]
    assert params == sorted(params) and params[-1] < sum(q.numel() for q in model.parameters())


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow
            return self.c(x).mean((2, 3))
        return self.c(-x).mean((2, 3))


def test_untraceable_model_is_a_clear_error():
    with pytest.raises(IsplitError, match="cannot trace"):
        ModelGraph(Untraceable(), (3, 8, 8))


def test_unknown_and_invalid_points():
    graph = ModelGraph(torchvision.models.resnet18(), (3, 32, 32))
    with pytest.raises(IsplitError, match="unknown split point"):
        graph.split("layer9.relu")
    with pytest.raises(IsplitError, match="not a valid cut"):
        graph.split("layer1.0.conv2")
