"""Tracing (leaf modules included), valid cuts, head/tail splitting, sizes and FLOPs."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from gated_model import Gate, Gated
from isplit import IsplitError
from isplit.graph import ModelGraph, leaf_module_name, split_model, split_points
from isplit.graph.cut import unsendable
from isplit.models.demo_modern import DemoViT


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


class ShapeTwice(ShapeLate):
    """Reads twice the batch size at the top of forward: a value the tail cannot rebuild."""

    def forward(self, x):
        twice = x.size(0) * 2
        h = F.max_pool2d(F.relu(self.c1(x)), 2)
        y = F.adaptive_avg_pool2d(torch.relu(self.c2(h) + h), 4)
        return self.fc(y.view(twice // 2, -1))


def test_small_values_crossing_a_cut_are_rebuilt_in_the_tail_or_travel_with_the_tensor():
    torch.manual_seed(0)
    model = ShapeLate().eval()
    graph = _check_all_cuts(model, (3, 8, 8))
    names = [p.name for p in graph.points]
    assert "max_pool2d" in names and "adaptive_avg_pool2d" in names
    # the batch size read at the top of forward: the tail reads it from the tensor
    assert graph.all_cuts["adaptive_avg_pool2d"][1] and not unsendable(graph, "adaptive_avg_pool2d")
    head, tail = split_model(model, "adaptive_avg_pool2d", (3, 8, 8))
    x = torch.randn(3, 3, 8, 8)
    payload = head(x)
    assert isinstance(payload, torch.Tensor) and payload.shape == (3, 8, 4, 4)
    torch.testing.assert_close(tail(payload), model(x))
    # twice the batch size is neither: it travels beside the tensor
    model = ShapeTwice().eval()
    graph = _check_all_cuts(model, (3, 8, 8))
    assert unsendable(graph, "adaptive_avg_pool2d") == ["mul"]
    head, tail = graph.split("adaptive_avg_pool2d")
    payload = head(x)
    assert isinstance(payload, tuple) and payload[0].shape == (3, 8, 4, 4) and payload[1] == 6
    torch.testing.assert_close(tail(payload), model(x))


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
    with pytest.raises(
        IsplitError, match="cannot trace Untraceable with torch.fx: its own forward"
    ):
        ModelGraph(Untraceable(), (3, 8, 8))


def test_unknown_and_invalid_points():
    graph = ModelGraph(torchvision.models.resnet18(), (3, 32, 32))
    with pytest.raises(IsplitError, match="unknown split point"):
        graph.split("layer9.relu")
    with pytest.raises(IsplitError, match="not a valid cut"):
        graph.split("layer1.0.conv2")


class StaticSamePaddingConv(nn.Conv2d):
    """A TensorFlow-style "same" convolution as EfficientNet-Lite ports write it: a fixed
    ``static_padding`` module (``nn.Identity`` when no padding is needed), then ``F.conv2d``."""

    def __init__(self, cin, cout, k, stride=1, groups=1, image_size=32):
        super().__init__(cin, cout, k, stride=stride, groups=groups, bias=False)
        pad = max((-(-image_size // stride) - 1) * stride + k - image_size, 0)
        half = pad // 2
        self.static_padding = (
            nn.ZeroPad2d((half, pad - half, half, pad - half)) if pad else nn.Identity()
        )

    def forward(self, x):
        x = self.static_padding(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class LiteBlock(nn.Module):
    def __init__(self, c, size, residual):
        super().__init__()
        self.residual = residual
        self._expand_conv = StaticSamePaddingConv(c, 4 * c, 1, image_size=size)
        self._bn0 = nn.BatchNorm2d(4 * c)
        self._depthwise_conv = StaticSamePaddingConv(4 * c, 4 * c, 3, groups=4 * c, image_size=size)
        self._bn1 = nn.BatchNorm2d(4 * c)
        self._project_conv = StaticSamePaddingConv(4 * c, c, 1, image_size=size)
        self._bn2 = nn.BatchNorm2d(c)
        self.act = nn.ReLU6()

    def forward(self, x):
        y = self.act(self._bn0(self._expand_conv(x)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class TinyEfficientNetLite(nn.Module):
    """EfficientNet-Lite's layout in miniature, with padding as modules and as F.pad calls."""

    def __init__(self):
        super().__init__()
        self._conv_stem = StaticSamePaddingConv(3, 8, 3, stride=2, image_size=32)
        self._bn0 = nn.BatchNorm2d(8)
        self._blocks = nn.ModuleList([LiteBlock(8, 16, False), LiteBlock(8, 16, True)])
        self.pool_pad = nn.ReflectionPad2d(1)
        self.pool = nn.MaxPool2d(3, 2)
        self.head_weight = nn.Parameter(torch.randn(8, 8, 2, 2) / 32)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.pool(self.pool_pad(x))
        x = F.conv2d(F.pad(x, (0, 1, 0, 1)), self.head_weight)
        return self.fc(x.mean((2, 3)))


def test_padding_is_folded_into_the_layer_it_feeds():
    torch.manual_seed(0)
    model = TinyEfficientNetLite()
    layer = split_points(model, (3, 32, 32))
    names = [p.name for p in layer]
    assert not [n for n in names if "pad" in n], names
    assert all(p.shape[2] <= 16 for p in layer if len(p.shape) == 4)  # nothing larger than a layer
    # cuts after the activation that ends each layer, under the names a practitioner expects
    assert names[:4] == ["relu6", "_blocks.0.act", "_blocks.0.act_1", "_blocks.0._bn2"]
    assert names[4:] == ["_blocks.1.add", "pool", "conv2d", "mean"]
    graph = _check_all_cuts(model, (3, 32, 32))  # head + tail still reproduce the model
    every = [p.name for p in graph.points]
    for padded in ("_conv_stem.static_padding", "_blocks.0._depthwise_conv.static_padding"):
        assert padded in every  # still there at --granularity all
    assert graph.point("_conv_stem.static_padding").shape == (1, 3, 33, 33)
    assert {"pool_pad", "pad"} <= set(every)


@pytest.mark.parametrize("leaf", [Gate, "Gate", leaf_module_name(Gate)])
def test_a_leaf_module_keeps_an_untraceable_submodule_whole(leaf):
    torch.manual_seed(0)
    model = Gated().eval()
    graph = ModelGraph(model, (3, 8, 8), granularity="all", leaf_modules=[leaf])
    assert graph.auto_leaf_modules == ()  # the user's: none found automatically
    assert "gate" in graph.all_cuts  # one node: its output is a cut, nothing inside it is
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        for name in graph.all_cuts:
            head, tail = graph.split(name)
            assert torch.equal(tail(head(x)), model(x)), name
    names = [p.name for p in split_points(model, (3, 8, 8), leaf_modules=[leaf])]
    assert names == ["r1", "gate", "r2", "mean"]
    head, tail = split_model(model, "gate", (3, 8, 8), leaf_modules=[leaf])
    with torch.no_grad():
        assert torch.equal(tail(head(x)), model(x))


def test_an_unknown_leaf_module_is_a_clear_error():
    with pytest.raises(IsplitError, match=r"'Gte' is no module class of Gated \(did you mean Gate"):
        ModelGraph(Gated(), (3, 8, 8), leaf_modules=["Gte"])
    with pytest.raises(IsplitError, match="no module class"):
        ModelGraph(Gated(), (3, 8, 8), leaf_modules=["no.such.Module"])


def _per_node_reference(graph):
    """FLOPs per node as the graph counted them before one mode served the whole run: a fresh
    FlopCounterMode (module tracking included) around each node."""
    from torch.fx import Interpreter
    from torch.utils.flop_counter import FlopCounterMode

    flops = {}

    class PerNode(Interpreter):
        def run_node(self, n):
            with FlopCounterMode(display=False) as counter:
                result = super().run_node(n)
            flops[n] = counter.get_total_flops()
            return result

    with torch.no_grad():
        PerNode(graph.gm).run(torch.zeros(1, *graph.input_shape))
    return flops


def _head_params_reference(graph, n):
    head = graph.nodes[: graph.nodes.index(n) + 1]
    params = {}
    for h in head:
        if h.op == "call_module":
            params.update({id(p): p.numel() for p in graph.gm.get_submodule(h.target).parameters()})
        elif h.op == "get_attr":  # a parameter used directly (ConvNeXt's layer scale)
            p = graph.gm.get_parameter(h.target)
            params[id(p)] = p.numel()
    return sum(params.values())


@pytest.mark.parametrize(
    "build,shape",
    [
        (lambda: torchvision.models.resnet18(weights=None), (3, 32, 32)),
        (lambda: torchvision.models.mobilenet_v3_small(weights=None), (3, 32, 32)),
        (lambda: __import__("tiny_nets").convnext(), (1, 28, 28)),
        (lambda: __import__("tiny_nets").vit(), (1, 28, 28)),  # attention: 0 FLOPs, as before
    ],
    ids=["resnet18", "mobilenet_v3_small", "convnext", "vit"],
)
def test_flops_and_params_per_point_are_those_of_per_node_counting(build, shape):
    torch.manual_seed(0)
    graph = ModelGraph(build().eval(), shape, granularity="all")
    want = _per_node_reference(graph)
    assert graph.flops == want and graph.total_flops > 0
    for name, (n, _) in graph.all_cuts.items():
        if n.op == "placeholder":
            continue
        p = graph.point(name)
        i = graph.nodes.index(n)
        assert p.head_flops == sum(want[h] for h in graph.nodes[: i + 1]), name
        assert p.head_params == _head_params_reference(graph, n), name


def test_a_vit_cut_after_the_patch_projection_carries_the_tensor_alone():
    """torchvision's ViT reads ``n, c, h, w = x.shape`` at the top of forward and uses them
    after the patch projection: the batch size is read from the tensor in the tail, the patch
    grid is a constant of the input size, so the head returns one tensor and the split is exact
    at any batch size."""
    net = DemoViT().eval()
    graph = ModelGraph(net, (1, 32, 32), "all")
    _, extras = graph.all_cuts["conv_proj"]
    assert [graph.names[e] for e in extras] == ["getitem", "floordiv", "floordiv_1"]
    assert unsendable(graph, "conv_proj") == []
    head, tail = graph.split("conv_proj")
    for batch in (1, 5):
        x = torch.randn(batch, 1, 32, 32)
        with torch.no_grad():
            code = head(x)
            assert isinstance(code, torch.Tensor) and code.shape == (batch, 64, 8, 8)
            torch.testing.assert_close(tail(code), net(x), rtol=1e-5, atol=1e-5)


class _WithConstant(nn.Module):
    """A forward that uses a tensor constant (torch.fx stores it on the model it traces)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.drop(torch.relu(self.conv(x)) + torch.tensor(0.5))
        return self.fc(x.mean((2, 3)))


def test_tracing_leaves_the_users_model_as_it_was():
    """Every submodule's train / eval flag, and no attribute added: tracing once left every
    submodule in eval mode (the graph shares them) and ``_tensor_constant0`` on the model."""
    model = _WithConstant().train()
    model.conv.eval()
    attributes = set(vars(model))
    graph = ModelGraph(model, (3, 8, 8), "all")
    assert [m.training for m in model.modules()] == [True, False, True, True]
    assert set(vars(model)) == attributes
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(graph.gm(x), model(x))
