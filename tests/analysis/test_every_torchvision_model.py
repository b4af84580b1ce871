"""Every classification model of torchvision (random weights, seeded, the smallest input it
takes) through ``isplit.analyze``: no admissible point without a known layout, no pooled vector
admissible, a finite CUI wherever the layout is known, and the layouts each family should have.
The heaviest models are marked slow; CI runs the others (a representative subset of every
family)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import TensorDataset

from isplit import analyze

MODELS = torchvision.models.list_models(module=torchvision.models)
# the smallest input each model takes (32 px otherwise); ViTs are built for their input size
SIZES = {"alexnet": 64, "inception_v3": 96, "maxvit_t": 224, "vit_b_32": 64, "vit_l_32": 64}
SIZES |= {"vit_h_14": 28}
SLOW = {
    "convnext_base", "convnext_large", "convnext_small", "efficientnet_b6", "efficientnet_b7",
    "efficientnet_v2_l", "maxvit_t", "regnet_x_32gf", "regnet_y_128gf", "regnet_y_16gf",
    "regnet_y_32gf", "resnet101", "resnet152", "resnext101_32x8d", "resnext101_64x4d", "swin_b",
    "swin_s", "swin_v2_b", "swin_v2_s", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn",
    "vgg19", "vgg19_bn", "vit_b_32", "vit_l_16", "vit_l_32", "wide_resnet101_2",
    "wide_resnet50_2", "vit_h_14", "efficientnet_v2_m", "regnet_y_8gf", "efficientnet_b4",
    "densenet201", "regnet_x_8gf", "efficientnet_b5", "densenet169", "densenet161",
    "regnet_x_16gf", "resnet50", "resnext50_32x4d", "efficientnet_v2_s",
}  # fmt: skip
# layouts some admissible point of the family must have
FAMILY_LAYOUTS = {
    "convnext": {"NCHW", "NHWC"},
    "swin": {"NHWC"},
    "vit_": {"NLC (+1 token)"},
    "maxvit": {"NCHW", "NPPC"},
}


def torchvision_model(name: str, size: int) -> nn.Module:
    """torchvision classifier ``name`` for ``size`` px inputs: 4 classes, seeded, eval mode."""
    torch.manual_seed(0)
    options: dict = {"num_classes": 4}
    if name.startswith("vit_"):
        options["image_size"] = size
    if name in ("googlenet", "inception_v3"):
        options.update(aux_logits=False, init_weights=True)
    model = torchvision.models.get_model(name, **options).eval()
    if name.startswith("vit_"):  # a zero-initialised head: every CUI would be 0
        nn.init.normal_(model.heads.head.weight, std=0.5)
    return model


@pytest.mark.parametrize(
    "name", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW else m for m in MODELS]
)
def test_every_torchvision_model_gets_layouts_and_a_finite_curve(name):
    size = SIZES.get(name, 32)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, size, size, generator=g), torch.tensor([1, 3])
    run = analyze(torchvision_model(name, size), TensorDataset(x, y), batch_size=2)
    assert any(p.admissible for p in run.points)
    for p, c in zip(run.points, run.cui):
        if p.admissible:
            assert p.layout.known and p.layout.grid_positions(p.shape) > 1, p.name
        if p.layout.known and p.layout.grid_positions(p.shape) <= 1:
            assert not p.admissible, p.name  # a pooled vector, whatever its rank
        assert np.isfinite(c) == p.layout.known, p.name  # NaN, never a guess, where unknown
    assert run.best is not None and run.point(run.best).admissible
    layouts = {p.layout.describe() for p in run.points if p.admissible}
    for family, expected in FAMILY_LAYOUTS.items():
        if name.startswith(family):
            assert {e for e in expected if any(d.startswith(e) for d in layouts)} == expected
