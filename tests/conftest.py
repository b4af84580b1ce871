"""Shared test fixtures."""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import user_error
from isplit.cli import main

#: The images of the shared demo analysis: the first ones of Fashion-MNIST's test split.
DEMO_IMAGES = 300


@pytest.fixture
def cli_error(capsys):
    """Run the CLI in this process and check it failed as a user mistake (exit 2, one line on
    stderr: :func:`helpers.user_error`); that line."""

    def run(*argv: str) -> str:
        capsys.readouterr()
        code = main(list(argv))
        return user_error(code, capsys.readouterr().err)

    return run


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Iterator[Path]:
    """The run folder of ``isplit analyze`` on the demo (demo-vgg16, packaged weights, the first
    DEMO_IMAGES Fashion-MNIST test images), analysed once for the whole session. Read-only:
    a test that writes into a run folder takes ``demo_run_copy`` (checked at the session's end)."""
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["analyze", "--limit", str(DEMO_IMAGES), "--out", str(out), "--quiet"]) == 0
    before = _listing(out)
    yield out
    assert _listing(out) == before, "a test wrote into demo_run: use demo_run_copy"


@pytest.fixture
def demo_run_copy(demo_run, tmp_path) -> Path:
    """A copy of ``demo_run`` in the test's own folder, to write into."""
    return Path(shutil.copytree(demo_run, tmp_path / "run"))


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict:
    """A tiny ConvNeXt and a tiny ViT (``tiny_nets``), trained on Fashion-MNIST, analysed, and
    validated at a channels-last point and a token point; once for the whole session."""
    from tiny_nets import NETS, prepare

    folder = tmp_path_factory.mktemp("tiny")
    return {name: prepare(name, folder) for name in NETS}


#: Room left on ``small_disk``: less than an analysis's outputs (its curves.png alone is ~100 kB).
SMALL_DISK_FREE = 48 * 1024


class _FullFile:
    """A file whose writes fail with ENOSPC once the shared ``budget`` ([bytes]) is spent."""

    def __init__(self, f, budget: list[int]):
        self._f, self._budget = f, budget

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        if n > self._budget[0]:
            import errno

            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget[0] -= n
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.fixture
def small_disk(tmp_path, monkeypatch) -> Iterator[Path]:
    """A folder with about ``SMALL_DISK_FREE`` bytes of room: a 2 MB tmpfs filled up but for
    that where the test may mount one (root), else a folder where isplit's writes (through
    :mod:`isplit.io`) fail with ENOSPC once that much is written (a simulated full disk).
    ``helpers.disk_listing`` lists it without the ballast."""
    import subprocess

    import isplit.io

    folder = tmp_path / "disk"
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)]
    try:
        mounted = subprocess.run(mount, capture_output=True).returncode == 0
    except OSError:
        mounted = False
    if mounted:
        st = os.statvfs(folder)
        (folder / ".ballast").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - SMALL_DISK_FREE))
    else:
        budget, real_open = [SMALL_DISK_FREE], isplit.io._open

        def full_open(fd: int):
            f = real_open(fd)
            inside = os.readlink(f"/proc/self/fd/{fd}").startswith(f"{folder}{os.sep}")
            return _FullFile(f, budget) if inside else f

        monkeypatch.setattr(isplit.io, "_open", full_open)
    yield folder
    if mounted:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.fixture(scope="session")
def demo_export(tmp_path_factory) -> Path:
    """The demo network (demo-vgg16) exported at features.23, plain (no bottleneck), once for
    the whole session: the folder ``isplit serve`` / ``isplit infer`` / Triton take. Read-only."""
    import isplit
    from isplit.deploy.export import export_split

    out = tmp_path_factory.mktemp("export") / "demo"
    export_split(isplit.load_model("demo-vgg16"), "features.23", out)
    return out
