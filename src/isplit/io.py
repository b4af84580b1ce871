"""Atomic writes of JSON and NPZ results, and reading them back with clear errors."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from isplit.errors import IsplitError

_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic(path: Path, write) -> None:
    """Write through ``write(file)`` to a temporary file beside ``path``, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    _atomic(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


def atomic_write_npz(path: Path, **arrays: np.ndarray) -> None:
    _atomic(path, lambda f: np.savez_compressed(f, **arrays))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def read_json(path: Path, what: str = "file") -> dict:
    path = Path(path)
    if not path.exists():
        raise IsplitError(f"{path} not found: is {path.parent} an isplit {what} folder?")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IsplitError(f"{path} is not valid JSON ({e})") from None
