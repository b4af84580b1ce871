"""The trained-model tier (tests/trained/): small timm networks of three preset kinds (a
bicubic ConvNeXt, a bilinear ResNet, a ViT), trained once by ``isplit train`` on a Fashion-MNIST
image folder that the tier writes, then analysed, validated, exported, served and planned by
isplit's commands.

The image folder and the trained weights are cached under ``.cache/isplit-tests/`` in the
repository (git-ignored; ``ISPLIT_TEST_CACHE`` moves it), keyed by :data:`VERSION`, torch's and
timm's versions and the isplit sources that change training; everything after training runs
afresh in each session, in the session's temporary folder."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from isplit.cli import main
from trained.reference import Geometry, image_files, write_image_folder, write_plain_folder

REPO = Path(__file__).resolve().parents[2]
#: Change to train again (the recipe below, the images).
VERSION = "1"
SIZE = 32  # --image-size of every network
PER_CLASS = {"train": 100, "test": 40}  # images per class written for each split
#: The isplit sources whose changes change the trained weights.
TRAINING_SOURCES = [
    "src/isplit/models/train.py",
    "src/isplit/models/loop.py",
    "src/isplit/models/timm_zoo.py",
    "src/isplit/models/presets.py",
    "src/isplit/models/loading.py",
    *(f"src/isplit/data/{m}.py" for m in ("base", "folders", "load", "loaders", "preprocess")),
]


@dataclass(frozen=True)
class Net:
    """One network of the tier: its timm architecture and ``isplit train`` options."""

    arch: str
    train_args: tuple[str, ...]
    interpolation: str  # the preset's, as timm's pretrained_cfg has it (checked)

    @property
    def model(self) -> str:
        return f"timm:{self.arch}"


#: kind -> network: a bicubic preset, a bilinear one and a vision transformer (bicubic)
NETS = {
    "bicubic": Net("test_convnext", ("--epochs", "4"), "bicubic"),
    "bilinear": Net("test_resnet", ("--epochs", "4"), "bilinear"),
    "vit": Net("test_vit", ("--epochs", "8", "--optimizer", "adamw", "--lr", "2e-3"), "bicubic"),
}


def cli(*argv: str) -> tuple[str, str]:
    """``isplit ARGV`` in this process; its stdout and stderr (exit code 0 checked)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    assert code == 0, (argv, code, out.getvalue()[-2000:], err.getvalue()[-2000:])
    return out.getvalue(), err.getvalue()


def _cache_key() -> str:
    import timm
    import torch

    versions = f"{VERSION} {SIZE} {PER_CLASS} {torch.__version__} {timm.__version__}"
    h = hashlib.sha256(versions.encode())
    for name in TRAINING_SOURCES:
        h.update(name.encode() + b"\0" + (REPO / name).read_bytes())
    for net in NETS.values():
        h.update(repr(net).encode())
    return h.hexdigest()[:16]


#: Cache folders of other keys unused this long (seconds) are removed.
STALE = 3600


@contextlib.contextmanager
def _locked(folder: Path):
    """``folder`` locked against other sessions (and marked used: its ``.lock`` file's time);
    the cache folders of other keys that no session used for :data:`STALE` seconds removed."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            for other in folder.parent.glob("trained-*"):
                lock = other / ".lock"
                used = lock.stat().st_mtime if lock.exists() else other.stat().st_mtime
                if other != folder and time.time() - used > STALE:
                    shutil.rmtree(other, ignore_errors=True)
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class Trained:
    """A trained network of the tier and where its things are."""

    kind: str
    net: Net
    weights: Path
    data: Path  # the image folder (train/ and test/ sub-folders)
    metadata: dict

    @property
    def geometry(self) -> Geometry:
        """The preprocessing the weights record (the test reads the file with safetensors)."""
        pp = self.metadata["preprocess"]
        return Geometry(
            size=int(pp["size"]),
            resize=pp.get("resize"),
            interpolation=pp.get("interpolation", "bilinear"),
            mean=tuple(pp["mean"]),
            std=tuple(pp["std"]),
        )

    def test_images(self):
        return image_files(self.data / "test")


@dataclass
class Tier:
    """The tier's cache and the session's runs, each made on first use."""

    cache: Path
    tmp: Path
    _trained: dict = field(default_factory=dict)
    _runs: dict = field(default_factory=dict)

    @property
    def data(self) -> Path:
        folder = self.cache / "fashion-mnist"
        if not (folder / ".done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            write_image_folder(folder, PER_CLASS)
            (folder / ".done").touch()
        return folder

    @property
    def plain_data(self) -> Path:
        """The same images in one folder without split sub-folders (``<class>/<image>``)."""
        folder = self.cache / "plain-fashion-mnist"
        if not (folder / ".done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            write_plain_folder(folder, self.data)
            (folder / ".done").touch()
        return folder

    def trained(self, kind: str, plain: bool = False) -> Trained:
        """The network ``kind`` trained by ``isplit train`` (cached between sessions) on the
        image folder with ``train/`` and ``test/``, or with ``plain`` on :attr:`plain_data`."""
        key = (kind, plain)
        if key not in self._trained:
            from safetensors import safe_open

            net = NETS[kind]
            name = f"{kind}-{net.arch}{'-plain' if plain else ''}"
            weights = self.cache / f"{name}.safetensors"
            with _locked(self.cache):
                data = self.plain_data if plain else self.data
                if not weights.exists():
                    cli(
                        "train", "--model", net.model, "--weights", "none", "--data", data,
                        "--image-size", SIZE, "--batch-size", "32", "--workers", "0",
                        "--quiet", *net.train_args, "--out", weights,
                    )  # fmt: skip
            with safe_open(str(weights), "pt") as f:
                md = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
            self._trained[key] = Trained(kind, net, weights, data, md)
        return self._trained[key]

    def _once(self, key: tuple, make):
        if key not in self._runs:
            self._runs[key] = make()
        return self._runs[key]

    def analysis(self, kind: str) -> tuple[Path, str, str]:
        """``isplit analyze`` of the test images: the run folder, stdout and stderr."""

        def make():
            t = self.trained(kind)
            out = self.tmp / f"analysis-{kind}"
            stdout, stderr = cli(
                "analyze", "--model", t.net.model, "--weights", t.weights, "--data", t.data,
                "--split", "test", "--workers", "0", "--quiet", "--out", out,
            )  # fmt: skip
            return out, stdout, stderr

        return self._once(("analysis", kind), make)

    def curves(self, kind: str) -> dict:
        return json.loads((self.analysis(kind)[0] / "curves.json").read_text())

    def export(self, kind: str, point: str) -> tuple[Path, str]:
        """``isplit export`` of the analysed network at ``point``, checked on every test image."""

        def make():
            run = self.analysis(kind)[0]
            out = self.tmp / f"export-{kind}"
            n = sum(PER_CLASS["test"] for _ in range(10))
            stdout, _ = cli(
                "export", "--analysis", run, "--point", point, "--check-images", n, "--out", out
            )
            return out, stdout

        return self._once(("export", kind, point), make)


def cache_folder() -> Path:
    """Where this version of the tier keeps its images and weights."""
    root = Path(os.environ.get("ISPLIT_TEST_CACHE") or REPO / ".cache" / "isplit-tests")
    return root / f"trained-{_cache_key()}"
