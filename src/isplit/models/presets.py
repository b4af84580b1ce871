"""Preprocessing presets: torchvision's ImageNet default, a weights enum's own preset, and the
user's overrides (``--image-size``, ``--mean``, ``--std``) and channel count applied to one."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from isplit.data import Preprocess
from isplit.errors import IsplitError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Preprocessing of a model without any better information: torchvision's ImageNet preset.
IMAGENET_PREPROCESS = Preprocess(
    size=224, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=256
)


def preset_preprocess(weights: Any) -> Preprocess:
    """The preprocessing of a torchvision weights enum, from its ``transforms()`` preset."""
    t = weights.transforms()
    size = int(t.crop_size[0])
    resize = int(t.resize_size[0])
    return Preprocess(
        size=size,
        channels=3,
        mean=tuple(t.mean),
        std=tuple(t.std),
        resize=resize if resize >= size else None,
    )


def for_channels(pp: Preprocess, channels: int) -> Preprocess:
    """``pp`` for a model taking ``channels`` input channels (grey: the mean of the RGB stats)."""
    if pp.channels == channels:
        return pp
    if channels not in (1, 3):
        raise IsplitError(
            f"the model takes {channels} input channels; isplit feeds images with 1 or 3"
        )

    def fit(values: tuple[float, ...]) -> tuple[float, ...]:
        if len(values) == 1:
            return values
        return (sum(values) / len(values),) if channels == 1 else values

    return dataclasses.replace(pp, channels=channels, mean=fit(pp.mean), std=fit(pp.std))


def override(
    pp: Preprocess,
    image_size: int | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    preset: bool = False,
) -> Preprocess:
    """Apply ``--image-size``, ``--mean``, ``--std``.

    With ``preset`` (the preprocessing is the weights' own, e.g. torchvision's resize 256 ->
    crop 224) a resize step keeps its ratio to the size; otherwise images are resized straight
    to the requested size, with no crop."""
    changes: dict[str, Any] = {}
    if image_size is not None:
        if image_size < 1:
            raise IsplitError(f"--image-size must be at least 1, not {image_size}")
        changes["size"] = int(image_size)
        if pp.resize is not None and preset:
            changes["resize"] = max(int(image_size), round(pp.resize * image_size / pp.size))
        elif pp.resize is not None:
            changes["resize"] = None
    if mean is not None:
        changes["mean"] = tuple(float(m) for m in mean)
    if std is not None:
        changes["std"] = tuple(float(s) for s in std)
    return dataclasses.replace(pp, **changes) if changes else pp
