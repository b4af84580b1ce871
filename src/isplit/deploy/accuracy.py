"""What an export knows of its split's accuracy (the manifest's ``accuracy`` block): what
``isplit validate`` measured at the point with the bottleneck, and what the export itself
measured on its check images, against the *unsplit* network. A bottleneck that its validation
marked as not learned is refused (:func:`check_learned`)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from isplit.errors import IsplitError
from isplit.runfolder import RunFolder

log = logging.getLogger("isplit")


def validated(bottleneck: str | Path, point: str) -> dict | None:
    """What ``isplit validate`` measured at ``point`` with the bottleneck in the file
    ``bottleneck`` (its run's ``validation.json``): accuracy (float and 8-bit), the unsplit
    accuracy, whether the bottleneck learned; None when the run has no finished report there."""
    run = Path(bottleneck).parent.parent  # RUN/validation_points/POINT.safetensors
    folder = RunFolder(run)
    if not folder.validation.is_file():
        return None
    doc = folder.read(RunFolder.VALIDATION, "validation run")
    row = next((p for p in doc.get("points", []) if p.get("name") == point), None)
    if row is None:
        return None
    return {
        "run": str(run),
        "accuracy": row["accuracy"],
        "accuracy_int8": row.get("accuracy_int8"),
        "unsplit_accuracy": doc.get("unsplit_accuracy"),
        "test_images": doc.get("settings", {}).get("test_images"),
        "learned": bool(row.get("learned", True)),
        "not_learned_reason": row.get("not_learned_reason"),
    }


def check_learned(record: dict | None, point: str, allow_unlearned: bool = False) -> None:
    """Refuse a bottleneck that its validation marked as not learned (``record``: from
    :func:`validated`), unless ``allow_unlearned``, which warns instead."""
    if record is None:
        log.warning(
            "the validation run of the bottleneck at %s has no finished report there "
            "(validation.json): whether it learned is unknown; see the agreement with the "
            "unsplit network below",
            point,
        )
        return
    if record["learned"]:
        return
    what = (
        f"the bottleneck at {point} did not learn in its validation "
        f"({record['not_learned_reason']})"
    )
    if not allow_unlearned:
        raise IsplitError(
            f"{what}: served, the split would answer far worse than the unsplit network; "
            "train it longer (isplit validate --epochs ...) or pass --allow-unlearned to export "
            "it anyway"
        )
    log.warning("%s; exporting it anyway (--allow-unlearned)", what)


def accuracy_block(record: dict | None, predictions: dict, labels: torch.Tensor | None) -> dict:
    """The manifest's accuracy block: what validation measured at the point (``record``), and
    on the check images the accuracies of the unsplit network and of the exported split (float
    and 8-bit) when they are labelled, and how often the split agrees with the unsplit network."""
    y = None if labels is None else labels.numpy()

    def accuracy(pred: np.ndarray) -> float | None:
        return None if y is None else float((pred == y).mean())

    unsplit = predictions["unsplit"]
    return {
        "validation": record,
        "check_images": len(unsplit),
        "unsplit": accuracy(unsplit),
        "split": accuracy(predictions["split"]),
        "split_int8": accuracy(predictions["split_int8"]),
        "agreement_with_unsplit": float((predictions["split"] == unsplit).mean()),
        "agreement_with_unsplit_int8": float((predictions["split_int8"] == unsplit).mean()),
    }
