"""Atomic writes of JSON and NPZ results, and reading them back with clear errors.

Each write goes to a temporary file beside its target and is renamed into place when complete.
Inside :func:`staged`, the renames wait for the end of the block: the outputs of one command
(``curves.json`` and ``per_image.npz``, ``plan.json`` and ``plan.png``, ...) appear together or
not at all, so a full disk half-way leaves no run folder with some outputs and not others.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from isplit.errors import IsplitError

_UMASK = os.umask(0)
os.umask(_UMASK)


_staging = threading.local()  # .renames: (temporary, target) pairs waiting for the block's end


def _open(fd: int) -> IO[bytes]:
    """The file object every write of this module goes through (tests simulate a full disk
    here where they cannot mount a small one)."""
    return os.fdopen(fd, "wb")


def _atomic(path: Path, write) -> None:
    """Write through ``write(file)`` to a temporary file beside ``path``, then rename (at the
    end of the :func:`staged` block when inside one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with _open(fd) as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are ordinary files
        renames = getattr(_staging, "renames", None)
        if renames is None:
            os.replace(tmp, path)
        else:
            renames.append((tmp, path))
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)  # a failed write() names no file: name the one it was for
        raise


@contextlib.contextmanager
def staged() -> Iterator[None]:
    """Writes of this module inside the block are renamed into place together when it ends
    without error; on an error none is, and their temporary files are removed. Nested blocks
    join the outermost one."""
    if getattr(_staging, "renames", None) is not None:
        yield
        return
    _staging.renames = renames = []
    done = 0
    try:
        yield
        for tmp, path in renames:  # renames take no space: a full disk does not stop them
            os.replace(tmp, path)
            done += 1
    finally:
        _staging.renames = None
        for tmp, _ in renames[done:]:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


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
