"""Where an export is built: a hidden folder ``.NAME.XXXXXXXX.tmp`` beside its ``--out`` folder
``NAME``, renamed into place when complete, so that a failed export leaves nothing behind.

A killed export (``kill -9``, a power cut) cannot remove its folder: the next export to the same
place does. Each export holds an exclusive ``flock`` on its own folder while it builds it (the
kernel drops the lock when the process dies, however it dies), so a folder whose lock can be
taken is a leftover, and one whose lock cannot is another export still running: it is left
alone. Creating, cleaning and renaming take a lock on the parent folder, so two exports to the
same place never remove each other's folder or interleave their renames. Only folders that are
clearly an export's are removed: the hidden name that :func:`tempfile.mkdtemp` gives beside
``NAME``, holding nothing but the files an export writes. Where the file system has no
``flock`` (some network file systems), nothing is cleaned.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("isplit")

#: What an export folder holds (:mod:`isplit.deploy.export`); anything else marks a folder that
#: is not a leftover of ours. Hidden ``.*.tmp`` files are :mod:`isplit.io`'s half-written files.
EXPORT_FILES = frozenset(
    ("head.onnx", "tail.onnx", "tail_int8.onnx", "head.pt2", "tail.pt2", "head.ts", "tail.ts")
    + ("bottleneck.safetensors", "manifest.json", "triton")
)


@contextlib.contextmanager
def _locked(path: Path, blocking: bool = True) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path`` (a folder) for the block: True once held; False when
    another process holds it (``blocking=False``) or the file system has no locks."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        yield False
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError:  # held by another process, or no flock here
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _is_leftover(folder: Path, out: Path) -> bool:
    """Whether ``folder`` looks like an export's hidden build folder for ``out``."""
    pattern = rf"\.{re.escape(out.name)}\.[a-z0-9_]{{8}}\.tmp"
    if not re.fullmatch(pattern, folder.name) or folder.is_symlink() or not folder.is_dir():
        return False
    return all(
        p.name in EXPORT_FILES or (p.name.startswith(".") and p.name.endswith(".tmp"))
        for p in folder.iterdir()
    )


def remove_leftovers(out: Path) -> list[Path]:
    """Remove the build folders of exports to ``out`` that were killed (call it holding the
    parent's lock); the folders removed."""
    removed = []
    for folder in sorted(out.parent.glob(f".{glob.escape(out.name)}.*.tmp")):
        if not _is_leftover(folder, out):
            continue
        with _locked(folder, blocking=False) as free:
            if free:  # no export holds it: its process is gone
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    old = out.with_name(f".{out.name}.old")
    if old.is_dir() and out.is_dir():  # a replaced export whose removal was cut short
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old)
    if removed:
        log.warning(
            "removed what killed exports to %s left behind: %s",
            out,
            ", ".join(p.name for p in removed),
        )
    return removed


@contextlib.contextmanager
def build_folder(out: Path) -> Iterator[Path]:
    """A new hidden folder beside ``out`` to build an export in, locked while the block runs;
    leftovers of killed exports to ``out`` are removed first. The block moves the finished
    folder into place with :func:`replace`; what it leaves (an error) is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    held = contextlib.ExitStack()
    with _locked(out.parent) as parent_locked:
        if parent_locked:  # else another export's folder could be mistaken for a leftover
            remove_leftovers(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        held.enter_context(_locked(tmp))  # before the parent's lock goes: never seen unlocked
    with held:
        try:
            yield tmp
        finally:  # gone already when the block put it in place (:func:`replace`)
            shutil.rmtree(tmp, ignore_errors=True)


def replace(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing an earlier export there."""
    os.chmod(tmp, 0o777 & ~_umask())
    with _locked(out.parent):
        if not out.exists():
            tmp.rename(out)
            return
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
