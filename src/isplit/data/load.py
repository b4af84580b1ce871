"""Open a data set by name: ``fashion-mnist``, ``digits``, an image folder or ``torchvision:NAME``.

To add a data set: a module that builds a :class:`~isplit.data.base.LabelledDataset` and a
branch in :func:`load_dataset`.
"""

from __future__ import annotations

import os
from pathlib import Path

from isplit.data.base import LabelledDataset, SubsetDataset
from isplit.data.builtin import digits, fashion_mnist
from isplit.data.folders import HOLDOUT, ImageFileDataset, folder_dataset, holdout_note
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
    holdout: float = HOLDOUT,
) -> LabelledDataset:
    """Open a data set: ``fashion-mnist``, ``digits``, an image folder, or ``torchvision:NAME``.
    ``root`` (where the files are) is recorded in the data set's ``describe()``, so that a run
    folder says where its data came from. An image folder without split sub-folders is split
    by a hash of each file's path: ``holdout`` of it is the ``test`` split (also ``val``), the
    rest ``train``, and ``all`` is every image (see :func:`~isplit.data.folders.folder_dataset`)."""
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
        return folder_dataset(spec, split, preprocess, holdout)
    raise IsplitError(
        f"unknown data set {spec!r} (and no folder of that name); use fashion-mnist, digits, "
        "a folder with one sub-folder per class, or torchvision:NAME (e.g. torchvision:CIFAR10)"
    )


def load_train_test(
    spec: str,
    train_split: str,
    test_split: str | None,
    preprocess: Preprocess,
    root: str | None = None,
    download: bool = False,
    holdout: float = HOLDOUT,
) -> tuple[LabelledDataset, LabelledDataset | None, str | None]:
    """The images to train on and (unless ``test_split`` is None) to test on, never the same
    ones (an error where the splits share images), and the line that says how a folder without
    split sub-folders was divided (None for other data sets): what ``train`` and ``validate``
    open."""
    kw = {"root": root, "download": download, "holdout": holdout}
    train = load_dataset(spec, train_split, preprocess, **kw)
    if test_split is None:
        return train, None, holdout_note(train)
    test = load_dataset(spec, test_split, preprocess, **kw)
    shared = shared_images(train, test)
    if shared:
        raise IsplitError(
            f"the {train_split} and {test_split} splits of {spec} share {shared} image(s), so "
            "the test accuracy would be measured on training images; choose splits that do not "
            "overlap (on a folder without split sub-folders: train and test)"
        )
    return train, test, holdout_note(train, test)


def _files(ds: LabelledDataset) -> list[str] | None:
    if isinstance(ds, SubsetDataset):
        base = _files(ds.base)
        return None if base is None else [base[i] for i in ds.indices]
    return list(ds.paths) if isinstance(ds, ImageFileDataset) else None


def shared_images(a: LabelledDataset, b: LabelledDataset) -> int:
    """How many images two data sets share: image files by their resolved path; any other
    data set shares all its images with another of the same name, split and root."""
    fa, fb = _files(a), _files(b)
    if fa is not None and fb is not None:
        return len({os.path.abspath(p) for p in fa} & {os.path.abspath(p) for p in fb})
    if fa is None and fb is None and (a.name, a.split, a.root) == (b.name, b.split, b.root):
        return min(len(a), len(b))
    return 0


def holdout_share(given: float | None, weights: str | None = None) -> float:
    """The hold-out share of a folder without split sub-folders: ``given`` (``--holdout``), else
    the one a weights file was trained with (its metadata's ``holdout``, written by ``isplit
    train``: so a later command tests on the images training held out), else :data:`HOLDOUT`."""
    if given is not None:
        return float(given)
    if weights and str(weights).lower().endswith(".safetensors") and Path(weights).is_file():
        from isplit.models.weights import read_metadata

        share = read_metadata(str(weights)).get("holdout")
        if isinstance(share, (int, float)) and 0.0 < share < 1.0:
            return float(share)
    return HOLDOUT
