"""The built-in data sets: Fashion-MNIST (IDX files: an explicit root, the Debian package's folder,
isplit's cache, else a download) and scikit-learn's 8x8 digits."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np

from isplit.data.base import ArrayDataset, cache_dir, check_split
from isplit.data.preprocess import Preprocess
from isplit.errors import IsplitError

log = logging.getLogger("isplit")

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (plain or .gz) into an array of its shape."""
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = bytearray(f.read())  # writable, so torch can share it
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise IsplitError(f"{path} is not an IDX file of unsigned bytes; replace it")
    ndim = data[3]
    shape = tuple(int(n) for n in np.frombuffer(data, ">i4", count=ndim, offset=4))
    values = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if values.size != int(np.prod(shape)):
        raise IsplitError(f"{path} is truncated ({values.size} values for shape {shape})")
    return values.reshape(shape)


def _fashion_mnist_dirs(root: str | None) -> list[Path]:
    dirs = []
    if root:
        dirs += [Path(root).expanduser(), Path(root).expanduser() / "FashionMNIST" / "raw"]
    cache = cache_dir() / "fashion-mnist"
    return dirs + [FASHION_MNIST_SYSTEM_DIR, cache, cache / "FashionMNIST" / "raw"]


def _find_idx_pair(dirs: list[Path], stems: tuple[str, str]) -> tuple[Path, Path] | None:
    """The first folder holding both files (each plain or .gz)."""
    for d in dirs:
        found = []
        for stem in stems:
            found += [p for p in (d / stem, d / f"{stem}.gz") if p.is_file()][:1]
        if len(found) == 2:
            return found[0], found[1]
    return None


def _download_fashion_mnist() -> None:
    import torchvision

    target = cache_dir() / "fashion-mnist"
    log.info("downloading Fashion-MNIST to %s", target)
    try:
        for train in (True, False):
            torchvision.datasets.FashionMNIST(str(target), train=train, download=True)
    except Exception as e:  # offline: URLError, RuntimeError, ...
        raise IsplitError(
            f"downloading Fashion-MNIST to {target} failed ({e}); without internet install the "
            "Debian package dataset-fashion-mnist or pass --data-root where the IDX files are"
        ) from e


def fashion_mnist(split: str, pp: Preprocess, root: str | None, download: bool) -> ArrayDataset:
    check_split(split, list(_IDX_FILES), "fashion-mnist")
    dirs = _fashion_mnist_dirs(root)
    files = _find_idx_pair(dirs, _IDX_FILES[split])
    if files is None and download:
        _download_fashion_mnist()
        files = _find_idx_pair(dirs, _IDX_FILES[split])
    if files is None:
        raise IsplitError(
            f"Fashion-MNIST {split} files ({' and '.join(_IDX_FILES[split])}, plain or .gz) not "
            f"found in {', '.join(map(str, dirs))}; install the Debian package "
            "dataset-fashion-mnist, pass --data-root where the files are, or pass --download "
            "(needs internet)"
        )
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise IsplitError(f"{files[0]} and {files[1]} do not match; replace them")
    log.debug("Fashion-MNIST %s from %s", split, files[0].parent)
    return ArrayDataset("fashion-mnist", split, FASHION_MNIST_CLASSES, images, labels, pp)


def digits(split: str, pp: Preprocess) -> ArrayDataset:
    check_split(split, ["train", "test"], "digits")
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:
        raise IsplitError("the digits data set needs scikit-learn: pip install scikit-learn") from e
    digits = load_digits()
    parts = train_test_split(
        digits.images, digits.target, test_size=0.25, stratify=digits.target, random_state=0
    )
    images, labels = (parts[0], parts[2]) if split == "train" else (parts[1], parts[3])
    classes = [str(c) for c in range(10)]
    return ArrayDataset("digits", split, classes, images.astype(np.uint8), labels, pp, scale=16)
