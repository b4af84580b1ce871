"""Grad-CAM maps and CUI values: against Captum (an independent oracle) and the naive algorithm."""

import pytest
import torch
import torchvision
from captum.attr import LayerGradCam

from isplit.graph import ModelGraph
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
