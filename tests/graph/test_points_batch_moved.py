"""A point whose first axis is not the batch (Hiera's unroll moves position parts into it, so
it is 4 x N there) is listed with a NaN CUI, one per image: the analysis once failed with
"stack expects each tensor to be equal size"."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from isplit import analyze


class Unrolled(nn.Module):
    """Quarters of the image moved into the batch axis, convolved, and moved back."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.inner = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        n, c, h, w = x.shape
        x = x.reshape(n, c, 2, h // 2, 2, w // 2).permute(0, 2, 4, 1, 3, 5)
        x = torch.relu(self.inner(x.flatten(0, 2)))  # [4N, C, H/2, W/2]
        x = x.reshape(n, 4, c, h // 2, w // 2).mean((1, 3, 4))
        return self.fc(x)


def test_a_point_with_the_batch_moved_has_a_nan_cui():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    model = Unrolled().eval()
    run = analyze(model, TensorDataset(x, torch.tensor([0, 1, 3])), batch_size=3)
    moved = [p for p in run.points if p.shape[0] != 1]
    assert moved and all(not p.layout.known for p in moved)
    for p, c in zip(run.points, run.cui):
        assert np.isfinite(c) == p.layout.known, p.name
    assert run.best is not None and run.point(run.best).admissible
