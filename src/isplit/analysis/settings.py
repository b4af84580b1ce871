"""What an analysis computes (:class:`AnalysisSettings`: the fields that decide the result) and
how it is carried out (:class:`RunOptions`: device, loading, progress, checkpoints)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from isplit import distributed
from isplit.errors import IsplitError
from isplit.graph.capture import LeafModule, leaf_module_name
from isplit.graph.protocols import PROTOCOLS
from isplit.importance import registry
from isplit.importance.gradcam import REDUCTIONS, TARGETS, check_precision
from isplit.importance.registry import (
    DEFAULT_CAM,
    DEFAULT_PREDICTORS,
    PCA_PROBE_RATIO,
    parse_predictors,
    predictor_names,
)
from isplit.models import resolve_device


@dataclass(frozen=True)
class AnalysisSettings:
    """What an analysis computes: every field decides the result. They are written to
    ``curves.json``'s ``settings`` (with the device type) and enter the checkpoint's fingerprint
    (``leaf_modules`` only when given, ``probe_ratio`` only with ``pca-probe``, so that the
    fingerprints of runs made before they existed stay as they were)."""

    target: str = "label"
    reduction: str = "mean"
    protocol: str = "default"
    granularity: str = "layer"
    points: tuple[str, ...] | None = None
    batch_size: int = 64
    limit: int | None = None
    max_bytes: int | None = None
    max_head_flops: float | None = None
    first: str | None = None
    last: str | None = None
    precision: str = "fp32"  # the forward pass under autocast: fp32, bf16 or fp16
    # what is computed besides CUI (isplit.importance.registry); a comma-separated string too;
    # default CUI and pca-probe (the evidence-backed pick), ("cui",) for CUI alone
    predictors: tuple[str, ...] = DEFAULT_PREDICTORS
    select_by: str = "cui"  # the predictor whose maximum is the best split (added to predictors)
    probe_ratio: int = PCA_PROBE_RATIO  # pca-probe keeps ceil(channels / probe_ratio) components
    # submodules traced as one node (classes, class names or qualified type names)
    leaf_modules: tuple[LeafModule, ...] = ()
    # the CAM method whose maps give the CUI: a name of isplit.importance.registry.CAMS
    # ("gradcam", "gradcam++") or a GradCAM subclass
    cam: str | type = DEFAULT_CAM

    def __post_init__(self) -> None:
        names = parse_predictors(self.predictors)
        if self.select_by not in predictor_names():
            raise IsplitError(
                f"--select-by must be one of the predictors {', '.join(predictor_names())}, "
                f"not {self.select_by!r}"
            )
        self._set("predictors", tuple(parse_predictors([*names, self.select_by])))
        if self.protocol not in PROTOCOLS:
            raise IsplitError(f"--protocol must be one of {PROTOCOLS}, not {self.protocol!r}")
        if self.protocol == "official":
            self._set("target", "predicted")
        if self.target not in TARGETS:
            raise IsplitError(f"--target must be one of {TARGETS}, not {self.target!r}")
        if self.reduction not in REDUCTIONS:
            raise IsplitError(f"--reduction must be one of {REDUCTIONS}, not {self.reduction!r}")
        if self.batch_size < 1:
            raise IsplitError("--batch-size must be at least 1")
        if self.points is not None:
            self._set("points", tuple(self.points))
        check_precision(self.precision)
        if self.probe_ratio is None:
            self._set("probe_ratio", PCA_PROBE_RATIO)
        if not isinstance(self.probe_ratio, int) or self.probe_ratio < 1:
            raise IsplitError(f"--probe-ratio must be a whole number >= 1, not {self.probe_ratio}")
        leaves = self.leaf_modules or ()
        self._set("leaf_modules", (leaves,) if isinstance(leaves, (str, type)) else tuple(leaves))
        registry.cam_class(self.cam)  # an unknown name or a class that is no GradCAM: an error now

    @property
    def cam_class(self) -> type:
        """The :class:`~isplit.importance.gradcam.GradCAM` (sub)class that computes the maps."""
        return registry.cam_class(self.cam)

    @property
    def cam_name(self) -> str:
        """The CAM method's name, or a user's class's qualified name."""
        return registry.cam_name(self.cam)

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # normalising a frozen dataclass's field

    @property
    def budget(self) -> dict:
        """The restrictions of the admissible points (``restrict``'s keywords)."""
        return {
            "max_bytes": self.max_bytes,
            "max_head_flops": self.max_head_flops,
            "first": self.first,
            "last": self.last,
        }

    def record(self, device_type: str) -> dict:
        """The settings that decide the result, under ``curves.json``'s ``settings`` keys, for a
        run on a device of ``device_type``."""
        return {
            "target": self.target,
            "reduction": self.reduction,
            "protocol": self.protocol,
            "granularity": self.granularity,
            "batch_size": self.batch_size,
            "limit": self.limit,
            "device": device_type,
            "precision": self.precision,
            "predictors": list(self.predictors),
            "select_by": self.select_by,
            # only where they change the result (older runs' fingerprints stay as they were)
            **({"probe_ratio": self.probe_ratio} if "pca-probe" in self.predictors else {}),
            **(
                {"leaf_modules": [leaf_module_name(m) for m in self.leaf_modules]}
                if self.leaf_modules
                else {}
            ),
            **({"cam": self.cam_name} if self.cam_name != DEFAULT_CAM else {}),
        }


@dataclass(frozen=True)
class RunOptions:
    """How an analysis is carried out; none of it changes the result beyond float noise."""

    device: torch.device | str = "cpu"
    channels_last: bool | None = None  # channels-last memory format; None: on CUDA only
    workers: int | None = None  # data-loading processes (None: chosen for the device)
    # isplit's data sets cross from the loader as 8-bit pixels, normalised on the device (4x
    # fewer bytes; resized pixels rounded to 8 bits); False: as float32, normalised by the loader
    uint8: bool = True
    skip_bad_images: bool = False
    progress: bool = False
    checkpoint: Path | None = None  # save the accumulated curves here and resume from them
    checkpoint_seconds: float = 60.0  # save the checkpoint this often ...
    checkpoint_every: int | None = None  # ... or after every this many batches

    def __post_init__(self) -> None:
        device = distributed.local_device(resolve_device(self.device))
        object.__setattr__(self, "device", device)
        if self.checkpoint is not None:
            object.__setattr__(self, "checkpoint", Path(self.checkpoint))
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise IsplitError(f"--checkpoint-every must be at least 1, not {self.checkpoint_every}")

    def checkpoint_due(self, batches: int, since: float) -> bool:
        """Whether to save the checkpoint, ``batches`` batches and ``since`` seconds after the
        last save."""
        if self.checkpoint is None:
            return False
        if self.checkpoint_every is not None:
            return batches >= self.checkpoint_every
        return since > self.checkpoint_seconds


_SETTINGS = {f.name for f in dataclasses.fields(AnalysisSettings)}
_RUN = {f.name for f in dataclasses.fields(RunOptions)}


def from_options(
    settings: AnalysisSettings | None, run: RunOptions | None, options: dict[str, Any]
) -> tuple[AnalysisSettings, RunOptions]:
    """``settings`` and ``run`` (default ones where None) with the fields named in ``options``
    (keyword arguments of :func:`~isplit.analyze`) replaced."""
    unknown = sorted(set(options) - _SETTINGS - _RUN)
    if unknown:
        raise TypeError(f"analyze() got an unexpected keyword argument {unknown[0]!r}")
    mine = {k: v for k, v in options.items() if k in _SETTINGS}
    theirs = {k: v for k, v in options.items() if k in _RUN}
    settings = (
        dataclasses.replace(settings, **mine) if settings is not None else AnalysisSettings(**mine)
    )
    run = dataclasses.replace(run, **theirs) if run is not None else RunOptions(**theirs)
    return settings, run
