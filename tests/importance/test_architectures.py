"""Grad-CAM / CUI right on every family of vision network, whatever the layout of its tensors:
checked against an independent reference (forward hooks + ``torch.autograd.grad``, the layout of
each hooked tensor written here by hand), and on permuted / re-partitioned copies of a tensor."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from isplit.graph import ModelGraph
from isplit.importance import GradCAM


def _hand_layout(kind: str, a: torch.Tensor) -> torch.Tensor:
    """``a`` as [N, C, positions], from a layout named here, not inferred."""
    if kind == "NCHW":
        return a.flatten(2)
    if kind == "NHWC":
        return a.permute(0, 3, 1, 2).flatten(2)
    if kind == "NLC":
        return a.transpose(1, 2)
    if kind in ("NLC+1", "NLC+2"):  # class (and distillation) tokens first: not image positions
        return a[:, int(kind[-1]) :].transpose(1, 2)
    if kind == "NGPC":  # window / grid partitions: every G x P entry is a position
        return a.permute(0, 3, 1, 2).flatten(2)
    raise ValueError(kind)


def reference_cui(model, modules: dict[str, str], x, y) -> torch.Tensor:
    """CUI [N, K] at the outputs of ``modules`` (module name -> hand layout), from plain hooks."""
    acts: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda mod, inp, out, name=name: acts.__setitem__(name, out)
        )
        for name in modules
    ]
    try:
        x = x.clone().requires_grad_(True)  # so that the activations are part of the graph
        score = model(x).gather(1, y[:, None]).sum()
        grads = torch.autograd.grad(score, [acts[n] for n in modules])
    finally:
        for h in handles:
            h.remove()
    cuis = []
    for (name, kind), g in zip(modules.items(), grads):
        a, g = _hand_layout(kind, acts[name].detach()), _hand_layout(kind, g)
        alpha = g.mean(2, keepdim=True)
        cuis.append(torch.relu((alpha * a).sum(1) / a.shape[1]).mean(1))
    return torch.stack(cuis, 1)


def _model(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, num_classes=5, **kwargs).eval()
    if name.startswith("vit_"):  # torchvision zero-initialises the head: every CUI would be 0
        nn.init.normal_(model.heads.head.weight, std=0.5)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# family -> (model, build options, input size, {point: (hooked module, hand layout)})
FAMILIES = {
    "cnn": (
        "resnet18",
        {},
        64,
        {
            "maxpool": ("maxpool", "NCHW"),
            "layer1.1.relu_1": ("layer1", "NCHW"),
            "layer3.1.relu_1": ("layer3", "NCHW"),
        },
    ),
    "convnext": (
        "convnext_tiny",
        {},
        64,
        {
            "features.1.2.add": ("features.1", "NCHW"),
            "features.2.1": ("features.2", "NCHW"),
            "features.5.8.add": ("features.5", "NCHW"),
        },
    ),
    "swin": (
        "swin_t",
        {},
        64,
        {
            "features.0.2": ("features.0", "NHWC"),
            "features.1.1.add_1": ("features.1", "NHWC"),
            "features.2.norm": ("features.2.norm", "NHWC"),
            "features.5.5.add_1": ("features.5", "NHWC"),
        },
    ),
    "vit": (
        "vit_b_16",
        {"image_size": 64},
        64,
        {
            "encoder.layers.encoder_layer_0.add_1": ("encoder.layers.encoder_layer_0", "NLC+1"),
            "encoder.layers.encoder_layer_5.add_1": ("encoder.layers.encoder_layer_5", "NLC+1"),
            "encoder.ln": ("encoder.ln", "NLC+1"),
        },
    ),
}
MAXVIT_POINTS = {
    "blocks.0.layers.0.layers.MBconv.add": ("blocks.0.layers.0.layers.MBconv", "NCHW"),
    "blocks.0.layers.0.layers.window_attention.partition_swap": (
        "blocks.0.layers.0.layers.window_attention.partition_swap",
        "NGPC",
    ),
    "blocks.0.layers.0.layers.grid_attention.partition_swap.swapaxes": (
        "blocks.0.layers.0.layers.grid_attention.partition_swap",
        "NGPC",
    ),
    "blocks.1.layers.0.layers.MBconv.add": ("blocks.1.layers.0.layers.MBconv", "NCHW"),
}


def check_against_reference(model, size, points, labels=(0, 3, 4)):
    """CUI at ``points`` (point -> (hooked module, hand layout)) equals the hook reference on
    three random images of ``labels``, and every point is admissible: the graph."""
    graph = ModelGraph(model, (3, size, size))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 3, size, size, generator=g), torch.tensor(labels)
    ours = GradCAM(graph, list(points))(x, y).cui
    ref = reference_cui(model, dict(points.values()), x, y)
    assert (ref > 0).float().mean() > 0.5  # a test of something: the maps are mostly not empty
    torch.testing.assert_close(ours, ref, rtol=2e-4, atol=1e-12)
    for name in points:
        assert graph.point(name).admissible, name
    return graph


@pytest.mark.parametrize("family", FAMILIES)
def test_cui_equals_a_hook_reference_with_the_layout_written_by_hand(family):
    name, options, size, points = FAMILIES[family]
    check_against_reference(_model(name, **options), size, points)


@pytest.mark.slow
def test_maxvit_partitions_equal_the_hook_reference():
    check_against_reference(_model("maxvit_t"), 224, MAXVIT_POINTS)


@pytest.mark.parametrize(
    "name,options,size,copies",
    [
        # ConvNeXt's LayerNorm2d: channels-last inside, permuted back
        ("convnext_tiny", {}, 64, ["features.6.0.layer_norm", "features.6.0.permute_1"]),
        # Swin's last norm (N x H x W x C) and the permute to N x C x H x W after it
        ("swin_t", {}, 64, ["norm", "permute"]),
        # ViT's patch embedding: N x C x (H W) tokens, then N x (H W) x C
        ("vit_b_16", {"image_size": 64}, 64, ["reshape", "permute"]),
    ],
)
def test_a_permuted_copy_of_a_tensor_has_the_same_cui(name, options, size, copies):
    model = _model(name, **options)
    graph = ModelGraph(model, (3, size, size))
    x, y = (
        torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2)),
        torch.tensor([1, 2]),
    )
    result = GradCAM(graph, copies)(x, y, keep_maps=True)
    assert len({graph.layout(p).axes for p in copies}) == 2  # really two layouts
    torch.testing.assert_close(result.cui[:, 1], result.cui[:, 0], rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(result.maps[1], result.maps[0], rtol=1e-5, atol=1e-12)


@pytest.mark.slow
def test_a_maxvit_partition_of_a_tensor_has_the_same_cui_as_the_tensor():
    graph = ModelGraph(_model("maxvit_t"), (3, 224, 224))
    stem = "blocks.0.layers.0.layers."
    copies = [
        f"{stem}MBconv.add",
        f"{stem}window_attention.partition_op.reshape",
        f"{stem}window_attention.partition_op.permute",
        f"{stem}window_attention.partition_swap",
    ]
    x, y = (
        torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3)),
        torch.tensor([1, 2]),
    )
    cui = GradCAM(graph, copies)(x, y).cui
    for k in range(1, len(copies)):
        torch.testing.assert_close(cui[:, k], cui[:, 0], rtol=1e-5, atol=1e-12)


@pytest.mark.slow
def test_a_maxvit_window_partition_map_is_put_back_in_image_order():
    graph = ModelGraph(_model("maxvit_t"), (3, 224, 224))
    stem = "blocks.0.layers.0.layers."
    points = [f"{stem}MBconv.add", f"{stem}window_attention.partition_swap"]
    assert graph.layout(points[1]).grid == (56, 56)
    x, y = (
        torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4)),
        torch.tensor([0, 1]),
    )
    maps = GradCAM(graph, points)(x, y, keep_maps=True).maps
    scale = float(maps[0].abs().max())
    assert scale > 0
    torch.testing.assert_close(maps[1], maps[0], rtol=1e-5, atol=1e-6 * scale)  # the same picture
