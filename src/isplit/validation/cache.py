"""A head's outputs on a whole data set, computed once per split point and reused for every
epoch of the bottleneck's training: streamed through the head batch by batch as the loader
decodes the images (the images themselves are never all held in memory), kept in memory, or
memory-mapped on disk when large."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from isplit.data import make_loader
from isplit.errors import IsplitError

MEMMAP_BYTES = 2 * 1024**3  # cached head outputs larger than this go to disk


def stream(
    module: nn.Module,
    ds: Dataset,
    device: str | torch.device,
    batch_size: int,
    out: torch.Tensor | np.ndarray | None = None,
    *,
    workers: int | None = None,
    skip_bad_images: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``module`` over the data set, batch by batch as the loader decodes it (``workers``
    processes; unreadable images stop it, or are skipped with ``skip_bad_images``), without
    gradients: its outputs (written into ``out``, a preallocated tensor or memory-mapped array,
    when given: only its first rows when images were skipped) and the labels."""
    chunks, labels, i = [], [], 0
    loader = make_loader(ds, batch_size, workers=workers, skip_bad_images=skip_bad_images)
    with torch.no_grad():
        for x, y in loader:
            r = module(x.to(device))
            if isinstance(r, tuple):
                raise IsplitError(
                    "this cut carries small values beside the tensor that are neither the batch "
                    "size nor a constant of the input size; validating such cuts is not "
                    "supported yet"
                )
            if out is None:
                chunks.append(r.cpu())
            elif isinstance(out, np.ndarray):
                out[i : i + len(r)] = r.cpu().numpy()
            else:
                out[i : i + len(r)] = r.cpu()
            labels.append(y)
            i += len(r)
    if not labels:
        raise IsplitError("the training or test set for validation is empty")
    if out is None:
        return torch.cat(chunks), torch.cat(labels)
    return (torch.from_numpy(out) if isinstance(out, np.ndarray) else out)[:i], torch.cat(labels)


def head_outputs(
    head: nn.Module,
    ds: Dataset,
    device: str | torch.device,
    batch_size: int,
    shape: Sequence[int],
    folder: Path,
    tag: str,
    **loading,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's outputs (of ``shape`` per image) on every image of ``ds``, in memory, or
    memory-mapped in ``folder/<tag>.npy`` above :data:`MEMMAP_BYTES`; and the labels.
    ``loading``: how the images are read (``workers``, ``skip_bad_images``: see
    :func:`stream`)."""
    n = len(ds)
    if 4 * n * math.prod(shape) <= MEMMAP_BYTES:
        return stream(head, ds, device, batch_size, torch.empty((n, *shape)), **loading)
    folder.mkdir(parents=True, exist_ok=True)
    mm = np.lib.format.open_memmap(
        folder / f"{tag}.npy", mode="w+", dtype=np.float32, shape=(n, *shape)
    )
    return stream(head, ds, device, batch_size, mm, **loading)
