"""A curve that carries no information (0 everywhere, or not finite) is a warning that names
the likely cause, never a silent pick."""

import logging

import numpy as np
import torch
from torch.utils.data import TensorDataset
from torchvision.models import VisionTransformer

from isplit import analyze
from isplit.analysis.curves import flat_curve_warning


def test_flat_curves_are_named_and_a_usable_one_is_not():
    assert flat_curve_warning([0.0, 0.0, 1.0], [True, True, False]).startswith("the CUI is 0")
    assert "not finite at 1 of 2" in flat_curve_warning([np.nan, 1e-3], [True, True])
    assert flat_curve_warning([0.0, 1e-3], [True, True]) is None
    assert flat_curve_warning([np.nan, 1e-3], [False, True]) is None  # unknown layout: not used


def test_a_zero_initialised_vit_head_warns(caplog):
    torch.manual_seed(0)
    vit = VisionTransformer(16, 8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=16)
    vit.eval()
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    with caplog.at_level(logging.WARNING, logger="isplit"):
        run = analyze(vit, TensorDataset(x, y), batch_size=4)
    assert all(c == 0 for c, p in zip(run.cui, run.points) if p.admissible)
    assert "zero-initialised classifier" in caplog.text
    torch.nn.init.normal_(vit.heads.head.weight)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="isplit"):
        analyze(vit, TensorDataset(x, y), batch_size=4)
    assert "CUI is 0" not in caplog.text
