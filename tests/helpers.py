"""Helpers shared by several test files (pytest puts tests/ on the path: `import helpers`)."""

import os
import subprocess
import sys

import torch

#: Subprocesses of the tests: one torch thread each, so that two of them fit on two cores.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def user_error(code: int, err: str) -> str:
    """Check that the command line failed as a user mistake: exit 2, one line on stderr that
    starts "isplit: error:" (no traceback); that line."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("isplit: error:"), (code, err)
    return lines[0]


class StopAt(torch.utils.data.Dataset):
    """``base`` (its first ``n`` images), pressing Ctrl-C (KeyboardInterrupt) when image
    ``stop_at`` is read; ``None``: never."""

    def __init__(self, base, stop_at=None, n=None):
        self.base, self.stop_at = base, stop_at
        self.n = len(base) if n is None else n
        if hasattr(base, "classes"):
            self.classes = base.classes

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if self.stop_at is not None and i == self.stop_at:
            raise KeyboardInterrupt
        return self.base[i]


def isplit_process(*argv: str, **kw) -> subprocess.Popen:
    """``python -m isplit ARGV`` in a subprocess, its output captured as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "isplit", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        **kw,
    )


def disk_listing(folder) -> list[str]:
    """What is in ``folder`` (a ``small_disk``: conftest.py) besides its ballast."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name != ".ballast")


def made_analysis(points, cui, predictors: dict | None = None, **fields):
    """An :class:`~isplit.analysis.Analysis` of ``points`` with the global curve ``cui`` (one
    class "a", one image) and ``predictors`` (name -> values), without running a model."""
    import numpy as np

    from isplit.analysis import Analysis

    cui = np.asarray(cui, dtype=float)
    return Analysis(
        model="m",
        dataset={"name": "d", "classes": ["a"]},
        settings=fields.pop("settings", {}),
        points=points,
        cui=cui,
        per_class={"a": cui},
        per_image=cui[None].astype(np.float32),
        labels=np.zeros(1, int),
        predictions=np.zeros(1, int),
        candidates=fields.pop("candidates", []),
        best=fields.pop("best", None),
        predictors={k: np.asarray(v, dtype=float) for k, v in (predictors or {}).items()},
        **fields,
    )
