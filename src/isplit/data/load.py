"""Open a data set by name: ``fashion-mnist``, ``digits``, an image folder or ``torchvision:NAME``.

To add a data set: a module that builds a :class:`~isplit.data.base.LabelledDataset` and a
branch in :func:`load_dataset`.
"""

from __future__ import annotations

import os
from pathlib import Path

from isplit.data.base import LabelledDataset
from isplit.data.builtin import digits, fashion_mnist
from isplit.data.folders import folder_dataset
from isplit.data.preprocess import Preprocess
from isplit.data.torchvision_sets import torchvision_dataset
from isplit.errors import IsplitError


def is_builtin(spec: object) -> bool:
    """Whether ``spec`` names a data set isplit knows by name (not a folder of images)."""
    return spec in ("fashion-mnist", "digits") or str(spec).startswith("torchvision:")


def load_dataset(
    spec: str,
    split: str,
    preprocess: Preprocess,
    root: str | None = None,
    download: bool = False,
) -> LabelledDataset:
    """Open a data set: ``fashion-mnist``, ``digits``, an image folder, or ``torchvision:NAME``.
    ``root`` (where the files are) is recorded in the data set's ``describe()``, so that a run
    folder says where its data came from."""
    if is_builtin(spec):
        if spec == "fashion-mnist":
            ds = fashion_mnist(split, preprocess, root, download)
        elif spec == "digits":
            ds = digits(split, preprocess)
        else:
            ds = torchvision_dataset(spec.split(":", 1)[1], split, preprocess, root, download)
        if root is not None and spec != "digits":
            ds.root = str(Path(root).expanduser().resolve())
        return ds
    if os.sep in spec or "/" in spec or Path(spec).expanduser().exists():
        return folder_dataset(spec, split, preprocess)
    raise IsplitError(
        f"unknown data set {spec!r} (and no folder of that name); use fashion-mnist, digits, "
        "a folder with one sub-folder per class, or torchvision:NAME (e.g. torchvision:CIFAR10)"
    )
