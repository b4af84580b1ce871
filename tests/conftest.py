"""Shared test fixtures."""

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


@pytest.fixture(scope="session")
def demo_export(tmp_path_factory) -> Path:
    """The demo network (demo-vgg16) exported at features.23, plain (no bottleneck), once for
    the whole session: the folder ``isplit serve`` / ``isplit infer`` / Triton take. Read-only."""
    import isplit
    from isplit.deploy.export import export_split

    out = tmp_path_factory.mktemp("export") / "demo"
    export_split(isplit.load_model("demo-vgg16"), "features.23", out)
    return out
