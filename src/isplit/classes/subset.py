"""Retraining on a class subset: the bottleneck trained and tested on the subset's images only,
at the subset's best split and at the run's best split, to see whether the subset's own best
split is worth taking."""

from __future__ import annotations

import os

import numpy as np
import torch

from isplit.analysis import Analysis
from isplit.classes.report import ClassesReport
from isplit.runfolder import RunFolder
from isplit.validation import Settings, validate


def validate_subset(
    analysis: Analysis,
    report: ClassesReport,
    out: str | os.PathLike,
    settings: Settings | None = None,
    *,
    train_split: str = "train",
    data_root: str | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict:
    """Retrain the bottleneck at the subset's best and at the global best on the images of the
    report's subset only (``train_split`` to train, the run's split to test; the sweep goes
    to ``out/classes-validation``), and set the report's ``validation`` to the accuracies."""
    from isplit.data import SubsetDataset, load_dataset

    loaded = analysis.load_model()

    def only_subset(split: str):
        root = data_root or analysis.dataset.get("root")
        ds = load_dataset(analysis.dataset["name"], split, loaded.preprocess, root=root)
        keep = [ds.classes.index(c) for c in report.subset if c in ds.classes]
        return SubsetDataset(ds, np.flatnonzero(np.isin(ds.targets, keep)))

    points = sorted({report.best, report.global_best}, key=report.points.index)
    result = validate(
        loaded.model,
        analysis,
        only_subset(train_split),
        only_subset(analysis.dataset["split"]),
        RunFolder(out) / RunFolder.CLASSES_VALIDATION,
        points=points,
        settings=settings,
        device=device,
        model_name=loaded.name,
        progress=progress,
    )
    acc = result.accuracies()
    report.validation = {
        "subset_best": report.best,
        "global_best": report.global_best,
        "subset_best_accuracy": acc[report.best],
        "global_best_accuracy": acc[report.global_best],
        "subset_best_wins": acc[report.best] >= acc[report.global_best],
        "settings": result.settings,
    }
    return report.validation
