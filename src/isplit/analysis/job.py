"""One analysis job: its settings and what it runs on (the model's record, the data's size and
classes, this process's share), from which the checkpoint's fingerprint and ``curves.json``'s
``settings`` derive."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn
from torch.utils.data import DataLoader

from isplit.analysis.settings import AnalysisSettings, RunOptions
from isplit.graph import leaf_module_name
from isplit.models import LoadedModel, WeightsDigest, loaded_info


@dataclass
class Job:
    """One analysis: its settings and what it is run on (the model's record, the data's size
    and classes, this process's share of the data). The checkpoint's fingerprint and
    ``curves.json``'s ``settings`` derive from it, the same on every process of a distributed
    run."""

    settings: AnalysisSettings
    run: RunOptions
    model_name: str
    model_record: dict  # weights, seed, num_classes, preprocess
    weights: WeightsDigest  # weights_sha256, computed when the run needs it
    n_total: int
    class_names: list[str] | None
    shard: range  # the images (data set positions) this process analyses
    rank: int = 0
    world: int = 1
    model_classes: list[str] | None = None  # the class names the weights record
    trained: dict | None = None  # the accuracy the weights record (LoadedModel.trained)
    started: float = field(default_factory=time.perf_counter)  # when analyze was called

    @property
    def checkpoint(self) -> Path | None:
        """This process's checkpoint file: ``checkpoint.npz``, or with K processes
        ``checkpoint-rank{R}-of-{K}.npz`` beside it."""
        base = self.run.checkpoint
        if base is None or self.world == 1:
            return base
        return base.with_name(f"{base.stem}-rank{self.rank}-of-{self.world}{base.suffix}")

    def _settings_record(self, weights: bool = True) -> dict:
        """``weights``: with the weights' sha256 (computed now if it is not yet), else with
        ``None`` in its place."""
        out = {
            **self.settings.record(self.run.device.type),
            "weights": self.model_record.get("weights"),
            "seed": self.model_record.get("seed"),
            "weights_sha256": self.weights.value() if weights else None,
        }
        for key in ("num_classes", "preprocess"):
            if self.model_record.get(key) is not None:
                out[key] = self.model_record[key]
        return out

    def settings_json(
        self, input_shape: Sequence[int], auto_leaves: Sequence[type] = (), weights: bool = True
    ) -> dict:
        """``curves.json``'s ``settings``; ``auto_leaves``: the submodule classes the graph kept
        whole because torch.fx cannot trace into them (recorded as ``leaf_modules`` is, only when
        there are any; not in the fingerprint, which holds the model they follow from);
        ``weights``: see :meth:`_settings_record`."""
        return {
            **self._settings_record(weights),
            "input_shape": list(input_shape),
            **self.settings.budget,
            **(
                {"auto_leaf_modules": [leaf_module_name(c) for c in auto_leaves]}
                if auto_leaves
                else {}
            ),
        }

    @property
    def fingerprint(self) -> str:
        """Model, weights, data and settings of the run (checkpoints of another are refused)."""
        doc = [
            self.model_name,
            list(self.settings.points or []),
            self._settings_record(),
            self.settings.budget,
            self.n_total,
            self.class_names,
        ]
        return hashlib.sha256(json.dumps(doc, default=str).encode()).hexdigest()[:16]


def class_names(data, classes: Sequence[str] | None) -> list[str] | None:
    """``classes``, else the class names the data set (or a DataLoader's) holds, else None."""
    if classes is not None:
        return list(classes)
    for obj in (data, getattr(data, "dataset", None)):
        names = getattr(obj, "classes", None)
        if isinstance(names, (list, tuple, np.ndarray)):  # names, not e.g. a count
            return [str(c) for c in names]
    return None


def dataset_info(data, classes: list[str]) -> dict:
    """``curves.json``'s ``dataset``: the data set's own description and its classes."""
    ds = data.dataset if isinstance(data, DataLoader) else data
    if hasattr(ds, "describe"):
        info = dict(ds.describe())
    else:
        info = {"name": type(ds).__name__, "split": None}
    info["classes"] = classes
    return info


def model_record(
    model: nn.Module | LoadedModel, model_name: str | None
) -> tuple[nn.Module, str, dict]:
    """The module to analyse, its name and its record: a model that ``load_model`` built under
    the name, weights and seed it was loaded by, any other under its class name (or
    ``model_name``); without the weights' fingerprint (:class:`WeightsDigest` computes it when
    the run needs it)."""
    info = model if isinstance(model, LoadedModel) else loaded_info(model)
    if isinstance(model, LoadedModel):
        model = model.model
    if info is not None and info.model is not model:
        info = None
    model_name = model_name or (info.name if info is not None else type(model).__name__)
    record = info.record(fingerprint=False) if info is not None else {"model": model_name}
    return model, model_name, record
