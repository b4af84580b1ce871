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


class UnrolledTokens(nn.Module):
    """Hiera's unroll in small: tokens whose 2 x 2 strides move into the batch axis, then are
    reshaped back into tokens (in another order) that a Linear mixes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.inner = nn.Linear(8, 8)
        self.mix = nn.Linear(8, 8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        n, c, h, w = x.shape
        x = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, c)
        x = x.permute(0, 2, 4, 1, 3, 5).flatten(0, 2)  # [4N, H/2, W/2, C]
        x = torch.relu(self.inner(x))
        x = self.mix(x.reshape(n, h * w, c))  # tokens again, strides outermost
        return self.fc(x.mean(1))


def test_positions_moved_into_the_batch_and_back_are_positions_again():
    from importance.test_architectures import reference_cui

    torch.manual_seed(0)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 3])
    model = UnrolledTokens().eval()
    run = analyze(model, TensorDataset(x, y), batch_size=3)
    mix = run.point("mix")
    assert mix.admissible and mix.layout.axes in ("NPC", "NLC"), mix.layout.describe()
    assert not run.point("relu_1").layout.known  # the batch holds image positions there
    ref = reference_cui(model, {"mix": "NLC"}, x, y).mean(0)
    ours = torch.tensor([run.cui[run.point_names.index("mix")]], dtype=ref.dtype)
    torch.testing.assert_close(ours, ref, rtol=2e-4, atol=1e-12)
