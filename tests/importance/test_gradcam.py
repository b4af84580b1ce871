"""Grad-CAM maps and CUI values: against Captum (an independent oracle) and the naive algorithm;
its overridable steps (layout, channel weights)."""

import pytest
import torch
import torchvision
from captum.attr import LayerGradCam
from torch import nn

from isplit.graph import ModelGraph
from isplit.graph.layout import Layout
from isplit.importance import GradCAM
from isplit.importance.reference import naive_cui


def _frozen(model):
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.mark.parametrize(
    "arch,size,points",
    [
        (
            "resnet18",
            64,
            {
                "maxpool": "maxpool",
                "layer1.1.relu_1": "layer1",
                "layer2.1.relu_1": "layer2",
                "layer4.1.relu_1": "layer4",
            },
        ),
        (
            "vgg11",
            32,
            {
                "features.2": "features.2",
                "features.5": "features.5",
                "features.10": "features.10",
                "features.20": "features.20",
            },
        ),
    ],
)
def test_maps_equal_captum_layer_gradcam_divided_by_channels(arch, size, points):
    torch.manual_seed(0)
    model = _frozen(torchvision.models.get_model(arch, weights=None, num_classes=7))
    cam = GradCAM(ModelGraph(model, (3, size, size)), list(points))
    x = torch.randn(4, 3, size, size)
    y = torch.tensor([0, 3, 6, 2])
    ours = cam(x, y, keep_maps=True).maps
    for k, module in enumerate(points.values()):
        ref = LayerGradCam(model, model.get_submodule(module)).attribute(
            x.clone(), target=y, relu_attributions=True
        )
        channels = cam.module(x[:1])[1][k].shape[1]
        assert ref.shape == (4, 1, *ours[k].shape[1:])
        assert ours[k].abs().max() > 0
        torch.testing.assert_close(ours[k], ref[:, 0] / channels, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("target", ["label", "predicted"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_one_pass_equals_naive_per_layer_computation(target, reduction):
    torch.manual_seed(1)
    model = _frozen(torchvision.models.resnet18(weights=None, num_classes=5))
    graph = ModelGraph(model, (3, 32, 32))
    names = [p.name for p in graph.points]
    x = torch.randn(3, 3, 32, 32)
    y = torch.tensor([4, 0, 2])
    fast = GradCAM(graph, names, reduction)(x, y, target=target).cui.double()
    slow = naive_cui(model, x, y, names, target=target, reduction=reduction)
    assert fast.shape == (3, len(names))
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-10)


def test_sum_reduction_is_mean_times_channels():
    torch.manual_seed(2)
    model = _frozen(torchvision.models.vgg11(weights=None, num_classes=4))
    graph = ModelGraph(model, (3, 32, 32))
    names = [p.name for p in graph.points if p.spatial]
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 3])
    mean = GradCAM(graph, names, "mean")(x, y).cui
    total = GradCAM(graph, names, "sum")(x, y).cui
    channels = torch.tensor([graph.point(n).shape[1] for n in names], dtype=torch.float32)
    torch.testing.assert_close(total, mean * channels)


def test_inplace_relu_does_not_corrupt_captured_activations():
    """torchvision's ReLU(inplace=True) after a captured conv output must not change it."""
    torch.manual_seed(3)
    model = _frozen(torchvision.models.vgg11(weights=None, num_classes=3))
    graph = ModelGraph(model, (3, 32, 32), granularity="all")
    names = ["features.0", "features.1", "features.3"]  # conv output (relu in place follows)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    fast = GradCAM(graph, names)(x, y).cui.double()
    slow = naive_cui(model, x, y, names, graph=graph)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-10)
    conv_out = GradCAM(graph, names).module(x)[1][0]
    assert (conv_out < 0).any()  # the pre-activation really was kept


class ChannelsLast(nn.Module):
    """A conv block whose output is permuted to N x H x W x C and back: the permuted tensor holds
    the same numbers as the ReLU output before it, with channels on axis 3."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.relu(self.conv(x)).permute(0, 2, 3, 1)
        x = torch.relu(self.conv2(x.permute(0, 3, 1, 2)))
        return self.fc(torch.flatten(self.gap(x), 1))


class RowsAsChannels(GradCAM):
    """Says the permuted point's channels are on axis 1 (its rows): a per-point override."""

    def layout(self, k, activation):
        if self.points[k] == "permute":
            return Layout("NCPP", channels=(1,), positions=(2, 3))
        return super().layout(k, activation)


class PositiveWeights(GradCAM):
    """Only channels whose gradient raises the score on average count (a different weighting)."""

    def channel_weights(self, activation, gradient):
        return super().channel_weights(activation, gradient).clamp(min=0)


@pytest.fixture(scope="module")
def channels_last():
    torch.manual_seed(0)
    model = _frozen(ChannelsLast())
    graph = ModelGraph(model, (3, 8, 8), granularity="all")
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    return graph, x, y


def test_the_inferred_layout_gives_a_permuted_copy_the_same_cui_and_an_override_is_per_point(
    channels_last,
):
    graph, x, y = channels_last
    points = ["relu", "permute"]
    assert graph.layout("permute").axes == "NHWC" and graph.layout("relu").axes == "NCHW"
    plain = GradCAM(graph, points)(x, y, keep_maps=True)
    torch.testing.assert_close(plain.cui[:, 1], plain.cui[:, 0])  # a permuted copy
    torch.testing.assert_close(plain.maps[1], plain.maps[0])
    wrong = RowsAsChannels(graph, points)(x, y)
    torch.testing.assert_close(wrong.cui[:, 0], plain.cui[:, 0])  # the override is per point
    assert not torch.allclose(wrong.cui[:, 1], plain.cui[:, 1])  # rows taken as channels


def test_a_channel_weight_override_changes_the_maps_as_written(channels_last):
    graph, x, y = channels_last
    plain = GradCAM(graph, ["relu"])(x, y)
    positive = PositiveWeights(graph, ["relu"])(x, y, keep_maps=True)
    assert not torch.allclose(positive.cui, plain.cui)
    # by hand: activation and gradient at the point through the real tail
    head, tail = graph.split("relu")
    a = head(x).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(tail(a).gather(1, y[:, None]).sum(), a)
    alpha = g.mean((2, 3)).clamp(min=0)
    expected = torch.relu((alpha[:, :, None, None] * a.detach()).sum(1) / a.shape[1])
    torch.testing.assert_close(positive.maps[0], expected)
