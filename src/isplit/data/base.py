"""The data set type every isplit data set is (:class:`LabelledDataset`: images with labels and
class names), the in-memory and subset kinds, and what stands in for an unreadable image.

An image file that cannot be decoded is not an exception inside ``__getitem__`` (worker processes
would mangle the message): it comes back as a :class:`BadImage`, and the loader
(:class:`~isplit.data.loaders.BatchLoader`) decides in the main process whether to stop with an
:class:`~isplit.errors.IsplitError` or skip it.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from isplit.data.preprocess import Normalise, Preprocess, fit_uint8, pixels_to_input
from isplit.errors import IsplitError


def cache_dir() -> Path:
    """Where isplit keeps downloaded data: ``$XDG_CACHE_HOME/isplit`` or ``~/.cache/isplit``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "isplit"


@dataclass(frozen=True)
class BadImage:
    """Stands in for an image that could not be decoded."""

    path: str
    reason: str


class LabelledDataset(Dataset):
    """A data set of ``(image tensor | BadImage, label)`` with class names and all labels."""

    in_memory = False  # True: items are cheap tensor slices, worker processes do not pay off
    root: str | None = None  # the --data-root it was opened from, when one was given
    preprocess: Preprocess | None = None  # how its images become model inputs
    uint8 = False  # items are fit_uint8 pixels, which normaliser() finishes (with_uint8)
    scale = 255.0  # the pixel value that means white
    #: a folder without split sub-folders: which side of its hold-out this is (``side``: train,
    #: test or all; ``share``; ``folder_images``), recorded in :meth:`describe`; else None
    holdout: dict | None = None

    def __init__(self, name: str, split: str, classes: Sequence[str], targets: Any) -> None:
        self.name = name
        self.split = split
        self.classes = list(classes)
        self.targets = np.asarray(targets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | BadImage, int]:
        raise NotImplementedError

    def __getitems__(self, indices: Sequence[int]) -> list:
        return [self[i] for i in indices]

    def with_uint8(self) -> LabelledDataset | None:
        """This data set with items as 8-bit pixels of the model input's size (decoded and
        resized, not normalised: :meth:`normaliser` does that on the device), or None where it
        has no such form."""
        if self.preprocess is None:
            return None
        view = copy.copy(self)
        view.uint8 = True
        return view

    def _item(self, x: torch.Tensor) -> torch.Tensor:
        """Decoded uint8 pixels ``[..., C, H, W]`` -> this data set's item: fitted 8-bit pixels
        (:meth:`with_uint8`) or the float32 model input."""
        if self.uint8:
            return fit_uint8(x, self.preprocess)
        return pixels_to_input(x, self.preprocess, self.scale)

    def normaliser(self) -> Normalise:
        """What turns a batch of this data set's 8-bit items into model inputs."""
        if self.preprocess is None:
            raise TypeError(f"{type(self).__name__} has no preprocessing")
        return Normalise(self.preprocess, self.scale)

    def describe(self) -> dict:
        info = {
            "name": self.name,
            "split": self.split,
            "images": len(self),
            "classes": list(self.classes),
        }
        if self.root is not None:
            info["root"] = self.root
        if self.holdout is not None:
            info["holdout"] = dict(self.holdout)
        return info

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, split={self.split!r}, images={len(self)})"


class ArrayDataset(LabelledDataset):
    """Images held as one ``[N, H, W]`` uint8 tensor; pixel value ``scale`` means white."""

    in_memory = True

    def __init__(
        self,
        name: str,
        split: str,
        classes: Sequence[str],
        images: Any,
        targets: Any,
        preprocess: Preprocess,
        scale: float = 255.0,
    ) -> None:
        super().__init__(name, split, classes, targets)
        self.images = torch.as_tensor(images, dtype=torch.uint8)
        self.preprocess = preprocess
        self.scale = float(scale)

    def with_uint8(self) -> LabelledDataset | None:
        """None when white is not 255 (the digits' 0-16): resizing would round too coarsely."""
        return super().with_uint8() if self.scale == 255.0 else None

    def _inputs(self, index: Any) -> torch.Tensor:
        return self._item(self.images[index].unsqueeze(-3))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self._inputs(int(i)), int(self.targets[i])

    def __getitems__(self, indices: Sequence[int]) -> list:
        """A whole batch in one tensor op (the DataLoader calls this when it exists)."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        labels = self.targets[index.numpy()].tolist()
        return list(zip(self._inputs(index).unbind(0), labels, strict=True))


class SubsetDataset(LabelledDataset):
    """Some items of a labelled data set (see :func:`limit_dataset`)."""

    def __init__(self, base: LabelledDataset, indices: Sequence[int]) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        super().__init__(base.name, base.split, base.classes, base.targets[self.indices])
        self.in_memory = base.in_memory
        self.root, self.holdout = base.root, base.holdout
        self.preprocess, self.uint8, self.scale = base.preprocess, base.uint8, base.scale

    def with_uint8(self) -> LabelledDataset | None:
        base = self.base.with_uint8()
        return None if base is None else SubsetDataset(base, self.indices)

    def normaliser(self) -> Normalise:
        return self.base.normaliser()

    def __getitem__(self, i: int):
        return self.base[int(self.indices[i])]

    def __getitems__(self, indices: Sequence[int]) -> list:
        return self.base.__getitems__([int(self.indices[i]) for i in indices])


def limit_dataset(ds: Dataset, limit: int | None, seed: int = 0) -> Dataset:
    """A deterministic random subset of ``limit`` items, in their original order."""
    if limit is None or limit >= len(ds):
        return ds
    if limit < 1:
        raise IsplitError(f"--limit must be at least 1, not {limit}")
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(len(ds), size=limit, replace=False))
    if isinstance(ds, LabelledDataset):
        return SubsetDataset(ds, indices)
    return torch.utils.data.Subset(ds, indices.tolist())


def check_split(split: str, splits: list[str], name: str) -> None:
    if split not in splits:
        raise IsplitError(f"{name} has no split {split!r}; use one of: {', '.join(splits)}")
