"""Popular timm models across families (random weights, seeded, small inputs) through
``isplit.analyze``: the same guarantees as for torchvision's models, and the CUI against the hook
reference (layout written by hand) on transformer tokens with class and distillation tokens."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch.utils.data import TensorDataset

from importance.test_architectures import reference_cui
from isplit import analyze
from isplit.graph import ModelGraph
from isplit.importance import GradCAM

# name: (timm options, input size, layouts some admissible point must have)
MODELS = {
    "resnet10t": ({}, 32, {"NCHW"}),
    "efficientnet_b0": ({}, 32, {"NCHW"}),
    "mobilenetv3_small_050": ({}, 32, {"NCHW"}),
    "convnext_atto": ({}, 32, {"NCHW", "NHWC"}),
    "convnextv2_atto": ({}, 32, {"NCHW"}),
    "edgenext_xx_small": ({}, 64, {"NHWC"}),
    "vit_tiny_patch16_224": ({"img_size": 32}, 32, {"NLC (+1 token)"}),
    "deit_tiny_distilled_patch16_224": ({"img_size": 32}, 32, {"NLC (+2 tokens)"}),
    "eva02_tiny_patch14_224": ({"img_size": 28}, 28, {"NLC (+1 token)"}),
    "levit_128s": ({"img_size": 64}, 64, {"NLC", "NCLC"}),
    "pvt_v2_b0": ({}, 64, {"NLC", "NHWC"}),
    "coatnet_nano_rw_224": ({"img_size": 64}, 64, {"NCHW", "NHWC"}),
    "maxvit_nano_rw_256": ({"img_size": 64}, 64, {"NCHW", "NHWC"}),
    "poolformer_s12": ({}, 32, {"NCHW"}),
    "swin_tiny_patch4_window7_224": ({"img_size": 64, "window_size": 4}, 64, {"NHWC", "NPPPPC"}),
    "swinv2_cr_tiny_ns_224": ({"img_size": 64, "window_size": 4}, 64, {"NHWC", "NPPPPC"}),
    # torch.fx cannot trace into their attention blocks: kept whole automatically
    "mobilevit_xxs": ({}, 64, {"NCHW"}),
    "efficientvit_b0": ({}, 64, {"NCHW"}),
}
SLOW = {"maxvit_nano_rw_256", "coatnet_nano_rw_224", "eva02_tiny_patch14_224"}
SLOW |= {"swinv2_cr_tiny_ns_224"}


def _model(name: str, options: dict):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=4, **options).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.mark.parametrize(
    "name", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW else m for m in MODELS]
)
def test_timm_models_get_layouts_and_a_finite_curve(name):
    options, size, expected = MODELS[name]
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, size, size, generator=g), torch.tensor([1, 3])
    run = analyze(_model(name, options), TensorDataset(x, y), batch_size=2)
    for p, c in zip(run.points, run.cui):
        if p.admissible:
            assert p.layout.known and p.layout.grid_positions(p.shape) > 1, p.name
        assert np.isfinite(c) == p.layout.known, p.name
    assert not any(not p.layout.known for p in run.points if p.admissible)
    layouts = {p.layout.describe() for p in run.points if p.admissible}
    assert expected <= layouts, layouts
    assert run.best is not None and run.point(run.best).admissible


# name: (options, size, {point: (hooked module, hand layout)})
REFERENCE = {
    "vit_tiny_patch16_224": (
        {"img_size": 32},
        32,
        {"blocks.2.add_1": ("blocks.2", "NLC+1"), "blocks.5.add_1": ("blocks.5", "NLC+1")},
    ),
    "deit_tiny_distilled_patch16_224": (
        {"img_size": 32},
        32,
        {"blocks.3.add_1": ("blocks.3", "NLC+2"), "blocks.9.add_1": ("blocks.9", "NLC+2")},
    ),
    "convnextv2_atto": (
        {},
        32,
        {
            "stages.1.blocks.1.add": ("stages.1", "NCHW"),
            "stages.2.blocks.5.add": ("stages.2", "NCHW"),
        },
    ),
    "pvt_v2_b0": (
        {},
        64,
        {"stages.1.blocks.1.add_1": ("stages.1.blocks.1", "NLC")},
    ),
}


@pytest.mark.parametrize("name", REFERENCE)
def test_timm_cui_equals_the_hook_reference(name):
    options, size, points = REFERENCE[name]
    model = _model(name, options)
    graph = ModelGraph(model, (3, size, size))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 3, size, size, generator=g), torch.tensor([0, 2, 3])
    ours = GradCAM(graph, list(points))(x, y).cui
    ref = reference_cui(model, dict(points.values()), x, y)
    assert (ref > 0).float().mean() > 0.5
    torch.testing.assert_close(ours, ref, rtol=2e-4, atol=1e-12)
