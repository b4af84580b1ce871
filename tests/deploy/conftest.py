"""Fixtures of the tail server's tests (test_server_*.py); their helpers are in serving.py."""

import sys
from pathlib import Path

import pytest

import isplit
from isplit.deploy.export import export_split
from serving import CAP

_NET = '''
import torch
from torch import nn


class Wide(nn.Module):
    """Sends 16 x 32 x 32 floats (64 KiB) per image across the split at ``conv``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        y = torch.relu(self.conv2(self.conv(x)))
        return self.fc(y.mean((2, 3)))
'''


@pytest.fixture(scope="session")
def small_export(tmp_path_factory) -> Path:
    """A small network exported at ``conv`` with at most CAP images per request."""
    folder = tmp_path_factory.mktemp("server")
    (folder / "servernets.py").write_text(_NET)
    sys.path.insert(0, str(folder))
    try:
        loaded = isplit.load_model("servernets:Wide", "none", image_size=32)
        export_split(loaded, "conv", folder / "exported", max_batch=CAP)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("servernets", None)
    return folder / "exported"
