"""Loaders: batches of model inputs for isplit's loops (:func:`make_loader`, where unreadable
images stop the run or are skipped), the number of worker processes, and the copy of batches to
the device ahead of the compute (:func:`to_device`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data import default_collate as _default_collate

from isplit.data.base import BadImage, LabelledDataset
from isplit.data.preprocess import Normalise
from isplit.errors import IsplitError

log = logging.getLogger("isplit")


def _collate(batch: list) -> tuple[torch.Tensor | None, torch.Tensor | None, list]:
    """Stack the good items; pass bad ones on as ``(path, reason)`` (runs in workers)."""
    good = [item for item in batch if not isinstance(item[0], BadImage)]
    bad = [(item[0].path, item[0].reason) for item in batch if isinstance(item[0], BadImage)]
    if not good:
        return None, None, bad
    x, y = _default_collate([(item[0], item[1]) for item in good])
    return x, torch.as_tensor(y).long(), bad


class BatchLoader:
    """Batches ``(x [B, C, H, W], y [B])``; bad images stop the run or are skipped."""

    def __init__(self, loader: DataLoader, skip_bad_images: bool = False, wrap: bool = False):
        self.loader = loader
        self.dataset = loader.dataset
        self.skip_bad_images = skip_bad_images
        self.skipped: list[str] = []
        self._wrap = wrap  # a user's DataLoader: pass its batches on as they are

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.loader:
            if self._wrap:
                yield batch
                continue
            x, y, bad = batch
            for path, reason in bad:
                self._bad_image(path, reason)
            if x is not None:
                yield x, y

    def _bad_image(self, path: str, reason: str) -> None:
        if not self.skip_bad_images:
            raise IsplitError(
                f"cannot read image {path}: {reason}; fix or remove the file, "
                "or pass --skip-bad-images"
            )
        log.warning("skipping unreadable image %s: %s", path, reason)
        self.skipped.append(path)


def default_workers(ds: Dataset, device: torch.device | str | None = None) -> int:
    """Feeding a GPU: up to 8 worker processes, whatever the data set (collating and
    normalising in the main process would leave the GPU waiting). On a CPU: 0 for in-memory
    data (and unknown user data sets), else up to 4."""
    if device is not None and torch.device(device).type == "cuda":
        return min(8, os.cpu_count() or 1)
    if not isinstance(ds, LabelledDataset) or ds.in_memory:
        return 0
    return min(4, os.cpu_count() or 1)


def make_loader(
    ds: Dataset | DataLoader,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    workers: int | None = None,
    skip_bad_images: bool = False,
    drop_last: bool = False,
    device: torch.device | str | None = None,
) -> BatchLoader:
    """Batch a data set (or wrap a user's DataLoader) for isplit's loops.

    For a CUDA ``device`` the batches come in pinned memory, prepared ahead by worker processes
    (two batches each), so that :func:`to_device` copies them asynchronously."""
    if isinstance(ds, DataLoader):
        return BatchLoader(ds, wrap=True)
    if batch_size < 1:
        raise IsplitError(f"--batch-size must be at least 1, not {batch_size}")
    workers = default_workers(ds, device) if workers is None else workers
    if workers < 0:
        raise IsplitError(f"--workers must be at least 0, not {workers}")
    cuda = device is not None and torch.device(device).type == "cuda"
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=workers,
        collate_fn=_collate,
        drop_last=drop_last,
        pin_memory=cuda,
    )
    return BatchLoader(loader, skip_bad_images=skip_bad_images)


def uint8_view(ds: Dataset) -> tuple[Dataset, Normalise | None]:
    """``ds`` giving 8-bit pixels, and the :class:`Normalise` that finishes them on the device,
    where it has that form (isplit's data sets, also inside a ``Subset``); else ``ds`` as it is
    and None (a user's data set of float tensors keeps its own path)."""
    if isinstance(ds, Subset):
        inner, norm = uint8_view(ds.dataset)
        return (Subset(inner, ds.indices), norm) if norm is not None else (ds, None)
    view = ds.with_uint8() if isinstance(ds, LabelledDataset) else None
    return (view, view.normaliser()) if view is not None else (ds, None)


def to_device(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, Any]],
    device: torch.device,
    channels_last: bool = False,
    prepare: Callable[..., torch.Tensor] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, Any]]:
    """``(x, y, extra)`` batches on the host -> ``(x, y, extra)`` with ``x`` and ``y`` on
    ``device`` (``x`` in channels-last memory format when asked and 4-D); ``prepare`` (e.g. a
    :class:`Normalise` of 8-bit pixels) runs on ``x`` once it is there.

    On CUDA the copies (and ``prepare``) are asynchronous (``non_blocking``; truly so from
    pinned memory) and run on a side stream: while the caller computes on one batch, the next
    one is already being copied. Nothing here waits for the GPU."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def arrive(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        if prepare is not None:
            x = prepare(x, memory_format=fmt) if x.dim() == 4 else prepare(x)
        return x.contiguous(memory_format=fmt) if x.dim() == 4 else x

    if device.type != "cuda":
        for x, y, extra in batches:
            yield arrive(x), y.to(device), extra
        return
    compute, side = torch.cuda.current_stream(device), torch.cuda.Stream(device)

    def copy(x: torch.Tensor, y: torch.Tensor, extra: Any):
        with torch.cuda.stream(side):
            return arrive(x), y.to(device, non_blocking=True), extra

    it = iter(batches)
    item = next(it, None)
    ahead = None if item is None else copy(*item)
    while ahead is not None:
        compute.wait_stream(side)  # the compute stream waits for the copy, not the host
        x, y, extra = ahead
        x.record_stream(compute)  # made on the side stream, used on the compute stream
        y.record_stream(compute)
        yield x, y, extra  # the caller queues its work on this batch ...
        item = next(it, None)  # ... and meanwhile the next one is loaded and copied
        ahead = None if item is None else copy(*item)
