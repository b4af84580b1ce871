"""``torchvision:NAME``: the data sets of ``torchvision.datasets`` (CIFAR10, MNIST, SVHN, ...),
their items (PIL images or arrays) taking the same path to a model input as image files."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch.utils.data import Dataset

from isplit.data.base import LabelledDataset, cache_dir, check_split
from isplit.data.preprocess import Preprocess, pil_to_uint8
from isplit.errors import IsplitError

log = logging.getLogger("isplit")


class TorchvisionDataset(LabelledDataset):
    """A ``torchvision.datasets`` data set whose items (PIL or arrays) take the PIL path."""

    def __init__(
        self,
        name: str,
        split: str,
        classes: Sequence[str],
        base: Dataset,
        targets: Any,
        preprocess: Preprocess,
    ) -> None:
        super().__init__(name, split, classes, targets)
        self.base = base
        self.preprocess = preprocess

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, label = self.base[int(i)]
        if isinstance(img, torch.Tensor):
            img = TF.to_pil_image(img)
        elif not isinstance(img, Image.Image):
            img = Image.fromarray(np.asarray(img))
        return self._item(pil_to_uint8(img, self.preprocess)), int(label)


_TORCHVISION_EXAMPLES = "CIFAR10, CIFAR100, MNIST, FashionMNIST, KMNIST, SVHN, STL10"


def torchvision_dataset(
    name: str, split: str, pp: Preprocess, root: str | None, download: bool
) -> TorchvisionDataset:
    import torchvision.datasets

    cls = getattr(torchvision.datasets, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, Dataset)):
        raise IsplitError(
            f"unknown torchvision data set {name!r}; use e.g. {_TORCHVISION_EXAMPLES} "
            "(names as in torchvision.datasets)"
        )
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {"download": download} if "download" in params else {}
    if "train" in params:
        check_split(split, ["train", "test"], f"torchvision:{name}")
        kwargs["train"] = split == "train"
    elif "split" in params:
        kwargs["split"] = split
    folder = str(Path(root).expanduser()) if root else str(cache_dir() / "torchvision")
    try:
        base = cls(folder, **kwargs)
    except ValueError as e:  # torchvision's check of the split argument
        raise IsplitError(f"torchvision:{name}: {e}") from e
    except (RuntimeError, OSError) as e:
        what = "download failed" if download else "files not found"
        raise IsplitError(
            f"torchvision:{name} {split}: {what} in {folder} ({e}); pass --data-root where "
            "the files are, or --download (needs internet)"
        ) from e
    targets = _torchvision_targets(base)
    classes = list(getattr(base, "classes", None) or [])
    if len(classes) <= int(targets.max(initial=0)):
        classes = [str(c) for c in range(int(targets.max(initial=0)) + 1)]
    return TorchvisionDataset(f"torchvision:{name}", split, classes, base, targets, pp)


def _torchvision_targets(base: Dataset) -> np.ndarray:
    for attr in ("targets", "labels", "_labels"):
        values = getattr(base, attr, None)
        if values is not None and len(values) == len(base):
            return np.asarray(values, dtype=np.int64)
    log.info("reading every item of %s once to find its labels", type(base).__name__)
    return np.asarray([int(base[i][1]) for i in range(len(base))], dtype=np.int64)
