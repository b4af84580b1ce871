"""The I-SPLIT analysis: model + data -> CUI curves -> candidates and best split.

``analyze`` streams the data through ``GradCAM`` once, accumulating per-image CUI curves, and
returns an ``Analysis`` that saves to (and loads from) a run folder: ``curves.json``,
``per_image.npz`` and ``curves.png``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from isplit import distributed
from isplit.analysis.curves import CurveAccumulator, best_point, local_maxima
from isplit.data import limit_dataset, make_loader, to_device
from isplit.errors import IsplitError, did_you_mean
from isplit.graph import ModelGraph, SplitPoint
from isplit.graph.protocols import PROTOCOLS, official_points
from isplit.importance import REDUCTIONS, TARGETS, GradCAM, autocast_dtype, check_labels
from isplit.importance.predictors import PCA_PROBE_RATIO, PREDICTORS, PredictorSet, parse_predictors
from isplit.io import atomic_write_json, atomic_write_npz
from isplit.models import LoadedModel, loaded_info, resolve_device, weights_fingerprint
from isplit.runfolder import FORMAT, RunFolder

log = logging.getLogger("isplit")

#: Head-FLOP budgets (shares of the model's FLOPs) shown beside the unconstrained best split.
STANDARD_FLOP_SHARES = (0.25, 0.5)
#: A head holding at least this share of the model's FLOPs leaves (nearly) nothing to the server.
NEARLY_ALL = 0.9


class AnalysisInterrupted(KeyboardInterrupt):
    """Ctrl-C during an analysis; the message says what was saved and how to resume."""


@dataclass
class Analysis:
    """The result of an I-SPLIT analysis (see DESIGN.md for the definitions)."""

    model: str
    dataset: dict  # name, split, images, classes
    settings: dict  # target, reduction, protocol, batch_size, granularity, input_shape, ...
    points: list[SplitPoint]
    cui: np.ndarray  # [K] global curve
    per_class: dict[str, np.ndarray]  # class name -> [K] (NaN where the class has no images)
    per_image: np.ndarray  # [N, K]
    labels: np.ndarray  # [N]
    predictions: np.ndarray  # [N]
    candidates: list[str]
    best: str | None
    skipped_images: list[str] = field(default_factory=list)
    total_flops: float | None = None  # the whole model's FLOPs at batch 1
    total_params: int | None = None  # the whole model's parameters
    fingerprint: str | None = None  # model, weights, data and settings of the run
    # further predictors of post-split accuracy (isplit.importance.predictors): name -> [K]
    predictors: dict[str, np.ndarray] = field(default_factory=dict)
    select_by: str = "cui"  # the predictor whose maximum is the best split
    # how the analysis loop spent its time in this call (rank 0's share under torchrun):
    # seconds, images, images_per_s, data_wait_seconds, data_wait_share
    timing: dict | None = None

    @property
    def point_names(self) -> list[str]:
        return [p.name for p in self.points]

    @property
    def predictor_names(self) -> list[str]:
        """``cui`` and the further predictors this run computed, in the order asked for."""
        return ["cui", *self.predictors]

    def curve(self, name: str) -> np.ndarray:
        """The per-point values [K] of predictor ``name`` (``cui`` or one the run computed)."""
        if name == "cui":
            return self.cui
        if name not in self.predictors:
            raise IsplitError(
                f"this analysis has no predictor {name!r} (it has "
                f"{', '.join(self.predictor_names)}); rerun analyze with --predictors {name}"
            )
        return self.predictors[name]

    @property
    def selection(self) -> np.ndarray:
        """The curve whose maximum over the admissible points is the best split."""
        return self.curve(self.select_by)

    def point(self, name: str) -> SplitPoint:
        return self.points[self.point_names.index(name)]

    def flop_share(self, p: SplitPoint) -> float | None:
        """The share of the model's FLOPs that the head up to ``p`` holds."""
        return p.head_flops / self.total_flops if self.total_flops else None

    def param_share(self, p: SplitPoint) -> float | None:
        """The share of the model's parameters that the head up to ``p`` holds."""
        return p.head_params / self.total_params if self.total_params else None

    def budget_picks(self, shares: Sequence[float] = STANDARD_FLOP_SHARES) -> list[dict]:
        """The best split among the admissible points whose head holds at most each share of the
        model's FLOPs."""
        out = []
        if not self.total_flops:
            return out
        for share in shares:
            mask = [p.admissible and p.head_flops <= share * self.total_flops for p in self.points]
            i = best_point(self.selection, mask)
            out.append(
                {
                    "max_flop_share": share,
                    "max_head_flops": share * self.total_flops,
                    "best": None if i is None else self.points[i].name,
                }
            )
        return out

    @property
    def nearly_all_on_device(self) -> bool:
        """The best split leaves (nearly) nothing for the server."""
        if self.best is None or not self.total_flops:
            return False
        return (self.flop_share(self.point(self.best)) or 0.0) >= NEARLY_ALL

    @property
    def accuracy(self) -> float:
        return float((self.labels == self.predictions).mean()) if len(self.labels) else float("nan")

    def to_json(self) -> dict:
        points = []
        for p, c in zip(self.points, self.cui):
            d = p.to_json()
            d["head_flop_share"] = _num(self.flop_share(p) if self.total_flops else np.nan)
            d["head_param_share"] = _num(self.param_share(p) if self.total_params else np.nan)
            d["cui"] = _num(c)
            d["log10_cui"] = _num(np.log10(c)) if c > 0 else None
            d["candidate"] = p.name in self.candidates
            for name, values in self.predictors.items():
                d[name] = _num(values[len(points)])
            points.append(d)
        return {
            "model": self.model,
            "fingerprint": self.fingerprint,
            "dataset": self.dataset,
            "settings": self.settings,
            "total_flops": self.total_flops,
            "total_params": self.total_params,
            "accuracy": _num(self.accuracy),
            "skipped_images": len(self.skipped_images),
            "skipped_files": self.skipped_images,
            "points": points,
            "predictors": self.predictor_names,
            "select_by": self.select_by,
            "timing": self.timing,
            "candidates": self.candidates,
            "best": self.best,
            "nearly_all_on_device": self.nearly_all_on_device,
            "budget_picks": self.budget_picks(),
            "per_class": {k: [_num(v) for v in vals] for k, vals in self.per_class.items()},
        }

    def save(self, out: str | os.PathLike, plot: bool = True) -> Path:
        """Write ``curves.json``, ``per_image.npz`` and (``plot``) ``curves.png`` into ``out``."""
        folder = RunFolder(out)
        folder.root.mkdir(parents=True, exist_ok=True)
        folder.set_aside_stale(self.fingerprint)
        atomic_write_npz(
            folder.per_image,
            cui=self.per_image,
            labels=self.labels,
            predictions=self.predictions,
            points=np.array(self.point_names, dtype=str),
        )
        atomic_write_json(folder.curves, {"format": FORMAT, **self.to_json()})
        if plot:
            from isplit.report.figures import plot_curves

            plot_curves(self, folder / folder.CURVES_PNG)
        return folder.root

    @classmethod
    def load(cls, run: str | os.PathLike) -> Analysis:
        folder = RunFolder(run)
        doc = folder.read(folder.CURVES)
        npz_path = folder.per_image
        if not npz_path.exists():
            raise IsplitError(f"{npz_path} is missing: the run folder has no per-image curves")
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        points = [SplitPoint.from_json(p) for p in doc["points"]]
        return cls(
            model=doc["model"],
            dataset=doc["dataset"],
            settings=doc["settings"],
            points=points,
            cui=np.array([np.nan if p["cui"] is None else p["cui"] for p in doc["points"]]),
            per_class={
                k: np.array([np.nan if v is None else v for v in vals])
                for k, vals in doc["per_class"].items()
            },
            per_image=arrays["cui"],
            labels=arrays["labels"],
            predictions=arrays["predictions"],
            candidates=list(doc["candidates"]),
            best=doc["best"],
            skipped_images=list(doc.get("skipped_files", [])),
            total_flops=doc.get("total_flops"),
            total_params=doc.get("total_params"),
            fingerprint=doc.get("fingerprint"),
            predictors={
                name: np.array([np.nan if p.get(name) is None else p[name] for p in doc["points"]])
                for name in doc.get("predictors", ["cui"])
                if name != "cui"
            },
            select_by=doc.get("select_by", "cui"),
            timing=doc.get("timing"),
        )

    def load_model(self) -> LoadedModel:
        """Rebuild the network this run analysed: same name, weights, seed and preprocessing;
        an error when its weights no longer match the run's fingerprint."""
        from isplit.models import load_recorded

        return load_recorded({"model": self.model, **self.settings})

    def table(self) -> str:
        """A short text table of the points: size, head FLOPs (and their share of the model's),
        log10 CUI, and marks: best, candidate, the pick under each standard FLOP budget."""
        picks: dict[str, list[str]] = {}
        for b in self.budget_picks():
            if b["best"] is not None:
                picks.setdefault(b["best"], []).append(f"best<={b['max_flop_share']:.0%}")
        extra = "".join(f"{n:>11}" for n in self.predictors)
        rows = [
            f"{'point':<28}{'shape':>18}{'bytes':>12}{'MFLOPs':>10}{'FLOPs%':>8}{'log10 CUI':>11}"
            f"{extra}  "
        ]
        for i, (p, c) in enumerate(zip(self.points, self.cui)):
            mark = (
                "best"
                if p.name == self.best
                else ("cand" if p.name in self.candidates else ("" if p.admissible else "-"))
            )
            mark = " ".join([mark, *picks.get(p.name, [])]).strip()
            lc = f"{np.log10(c):.3f}" if c > 0 else "-inf"
            share = self.flop_share(p)
            pct = "" if share is None else f"{100 * share:.1f}"
            values = "".join(f"{v[i]:>11.4f}" for v in self.predictors.values())
            rows.append(
                f"{p.name:<28}{'x'.join(map(str, p.shape)):>18}{p.bytes:>12}"
                f"{p.head_flops / 1e6:>10.1f}{pct:>8}{lc:>11}{values}  {mark}"
            )
        return "\n".join(rows)

    def recommendation(self) -> str:
        if self.best is None:
            return "no admissible split point: relax --max-bytes / --max-head-flops / --points"
        p = self.point(self.best)
        fs, ps = self.flop_share(p), self.param_share(p)
        shares = (
            ""
            if fs is None
            else f" = {fs:.0%} of the model's FLOPs"
            + ("" if ps is None else f", {ps:.0%} of its parameters")
        )
        by = "" if self.select_by == "cui" else f" (by {self.select_by})"
        lines = [
            f"best split{by}: {p.name} ({'x'.join(map(str, p.shape))}, {p.bytes} bytes at "
            f"batch 1, head {p.head_flops / 1e6:.1f} MFLOPs{shares}); candidates: "
            f"{', '.join(self.candidates) or 'none'}"
        ]
        if self.nearly_all_on_device:
            lines.append(
                "note: at this point the device runs (nearly) the whole network and the server "
                "little or nothing; under a head-FLOP budget:"
            )
            for b in self.budget_picks():
                if b["best"] is None:
                    share = b["max_flop_share"]
                    lines.append(f"  <= {share:.0%} of the FLOPs: no admissible point")
                    continue
                q = self.point(b["best"])
                lines.append(
                    f"  <= {b['max_flop_share']:.0%} of the FLOPs: {q.name} "
                    f"({'x'.join(map(str, q.shape))}, {q.bytes} bytes, head "
                    f"{q.head_flops / 1e6:.1f} MFLOPs = {self.flop_share(q):.0%})"
                )
            lines.append("  (set your own with --max-head-flops / --max-bytes)")
        return "\n".join(lines)


def _num(v) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def _class_names(data, classes: Sequence[str] | None) -> list[str] | None:
    if classes is not None:
        return list(classes)
    for obj in (data, getattr(data, "dataset", None)):
        names = getattr(obj, "classes", None)
        if isinstance(names, (list, tuple, np.ndarray)):  # names, not e.g. a count
            return [str(c) for c in names]
    return None


def _dataset_info(data, classes: list[str]) -> dict:
    ds = data.dataset if isinstance(data, DataLoader) else data
    if hasattr(ds, "describe"):
        info = dict(ds.describe())
    else:
        info = {"name": type(ds).__name__, "split": None}
    info["classes"] = classes
    return info


def select_points(
    graph: ModelGraph, points: Sequence[str] | None, protocol: str, model_name: str
) -> list[SplitPoint]:
    """The points to analyse, in network order."""
    if points is None and protocol == "official":
        points = official_points(graph, model_name)
    if points is None:
        return list(graph.points)
    order = {graph.names[n]: i for i, n in enumerate(graph.nodes)}
    chosen = [graph.point(p) for p in points]  # raises for unknown / invalid names
    if len({p.name for p in chosen}) != len(chosen):
        raise IsplitError("a split point is listed twice in --points")
    return sorted(chosen, key=lambda p: order[p.name])


def restrict(
    points: list[SplitPoint],
    *,
    max_bytes: int | None = None,
    max_head_flops: float | None = None,
    first: str | None = None,
    last: str | None = None,
) -> None:
    """Narrow the admissible points in place (spatial points between ``first`` and ``last``
    within the byte and FLOP budgets)."""
    names = [p.name for p in points]
    for flag, bound in (("--first", first), ("--last", last)):
        if bound is not None and bound not in names:
            raise IsplitError(
                f"{flag} '{bound}' is not one of the analysed points{did_you_mean(bound, names)}; "
                "run `isplit points` to list them"
            )
    lo = names.index(first) if first else 0
    hi = names.index(last) if last else len(points) - 1
    for i, p in enumerate(points):
        p.admissible = (
            p.spatial
            and lo <= i <= hi
            and (max_bytes is None or p.bytes <= max_bytes)
            and (max_head_flops is None or p.head_flops <= max_head_flops)
        )


@dataclass(frozen=True)
class AnalysisSettings:
    """How an analysis runs: one object from :func:`analyze` to the run loop.

    The fields down to ``select_by`` (with the device type) decide the result: they are written
    to ``curves.json``'s ``settings`` and enter the checkpoint's fingerprint. The fields after
    it only say how the work is carried out.
    """

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
    predictors: tuple[str, ...] = (
        "cui",
    )  # what is computed besides CUI (isplit.importance.predictors)
    select_by: str = "cui"  # the predictor whose maximum is the best split
    probe_ratio: int = PCA_PROBE_RATIO  # pca-probe keeps ceil(channels / probe_ratio) components
    # how the work is carried out
    device: torch.device = torch.device("cpu")
    channels_last: bool | None = None  # channels-last memory format; None: on CUDA only
    workers: int | None = None
    skip_bad_images: bool = False
    progress: bool = False
    checkpoint: Path | None = None
    checkpoint_seconds: float = 60.0  # save the checkpoint this often ...
    checkpoint_every: int | None = None  # ... or after every this many batches

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise IsplitError(f"--protocol must be one of {PROTOCOLS}, not {self.protocol!r}")
        if self.protocol == "official":
            object.__setattr__(self, "target", "predicted")
        if self.target not in TARGETS:
            raise IsplitError(f"--target must be one of {TARGETS}, not {self.target!r}")
        if self.reduction not in REDUCTIONS:
            raise IsplitError(f"--reduction must be one of {REDUCTIONS}, not {self.reduction!r}")
        if self.batch_size < 1:
            raise IsplitError("--batch-size must be at least 1")
        if self.points is not None:
            object.__setattr__(self, "points", tuple(self.points))
        object.__setattr__(self, "device", distributed.local_device(resolve_device(self.device)))
        autocast_dtype(self.precision, self.device)  # an error where the device cannot
        if self.checkpoint is not None:
            object.__setattr__(self, "checkpoint", Path(self.checkpoint))
        if not isinstance(self.probe_ratio, int) or self.probe_ratio < 1:
            raise IsplitError(f"--probe-ratio must be a whole number >= 1, not {self.probe_ratio}")
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

    @property
    def budget(self) -> dict:
        """The restrictions of the admissible points (``restrict``'s keywords)."""
        return {
            "max_bytes": self.max_bytes,
            "max_head_flops": self.max_head_flops,
            "first": self.first,
            "last": self.last,
        }

    def record(self) -> dict:
        """The settings that decide the result, under ``curves.json``'s ``settings`` keys."""
        return {
            "target": self.target,
            "reduction": self.reduction,
            "protocol": self.protocol,
            "granularity": self.granularity,
            "batch_size": self.batch_size,
            "limit": self.limit,
            "device": self.device.type,
            "precision": self.precision,
            "predictors": list(self.predictors),
            "select_by": self.select_by,
            # only where it changes the result (older runs' fingerprints stay as they were)
            **({"probe_ratio": self.probe_ratio} if "pca-probe" in self.predictors else {}),
        }


@dataclass
class _Job:
    """One analysis: its settings and what it is run on (the model's record, the data's size
    and classes, this process's share of the data). The checkpoint's fingerprint and
    ``curves.json``'s ``settings`` derive from it, the same on every process of a distributed
    run."""

    settings: AnalysisSettings
    model_name: str
    model_record: dict  # weights, seed, weights_sha256, num_classes, preprocess
    n_total: int
    class_names: list[str] | None
    shard: range  # the images (data set positions) this process analyses
    rank: int = 0
    world: int = 1

    @property
    def checkpoint(self) -> Path | None:
        """This process's checkpoint file: ``checkpoint.npz``, or with K processes
        ``checkpoint-rank{R}-of-{K}.npz`` beside it."""
        base = self.settings.checkpoint
        if base is None or self.world == 1:
            return base
        return base.with_name(f"{base.stem}-rank{self.rank}-of-{self.world}{base.suffix}")

    def _settings_record(self) -> dict:
        out = {
            **self.settings.record(),
            "weights": self.model_record.get("weights"),
            "seed": self.model_record.get("seed"),
            "weights_sha256": self.model_record["weights_sha256"],
        }
        for key in ("num_classes", "preprocess"):
            if self.model_record.get(key) is not None:
                out[key] = self.model_record[key]
        return out

    def settings_json(self, input_shape: Sequence[int]) -> dict:
        """``curves.json``'s ``settings``."""
        return {
            **self._settings_record(),
            "input_shape": list(input_shape),
            **self.settings.budget,
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


def analyze(
    model: nn.Module | LoadedModel,
    data: Dataset | DataLoader,
    *,
    points: Sequence[str] | None = None,
    target: str = "label",
    reduction: str = "mean",
    protocol: str = "default",
    granularity: str = "layer",
    batch_size: int = 64,
    limit: int | None = None,
    device: str | torch.device = "cpu",
    classes: Sequence[str] | None = None,
    max_bytes: int | None = None,
    max_head_flops: float | None = None,
    first: str | None = None,
    last: str | None = None,
    precision: str = "fp32",
    model_name: str | None = None,
    workers: int | None = None,
    skip_bad_images: bool = False,
    progress: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_seconds: float = 60.0,
    predictors: str | Sequence[str] | None = None,
    select_by: str = "cui",
    checkpoint_every: int | None = None,
    channels_last: bool | None = None,
    probe_ratio: int | None = None,
) -> Analysis:
    """Run the I-SPLIT analysis of ``model`` on ``data`` (a Dataset of (image, label) or a
    DataLoader). See the README for the options; the result is an ``Analysis``.

    ``model`` is an ``nn.Module`` or the :class:`~isplit.models.LoadedModel` that
    :func:`~isplit.load_model` returned; a model that ``load_model`` built is recorded under the
    name, weights and seed it was loaded by (so that ``isplit report`` / ``validate`` can rebuild
    it from the run folder), any other under its class name. The model's weights are
    fingerprinted (sha256) into the run; its ``training`` flag and parameter flags are restored
    afterwards.

    ``predictors``: further per-point predictors of post-split accuracy to compute in the same
    pass (:data:`isplit.importance.registry.PREDICTORS`; CUI always); ``select_by``: the one
    whose maximum over the admissible points is the best split (default ``cui``; added to
    ``predictors``);
    ``probe_ratio``: ``pca-probe`` keeps ``ceil(channels / probe_ratio)`` principal components
    (default 8, ``isplit validate``'s default ``--ratio``).

    With ``checkpoint`` (a file path), the accumulated curves are saved there every
    ``checkpoint_seconds`` seconds, or after every ``checkpoint_every`` batches when given, and
    a rerun with the same model, data and settings resumes from it (another run's checkpoint is
    refused); it is deleted when the analysis finishes.

    ``precision`` ``bf16`` or ``fp16`` runs the network's forward pass under
    ``torch.autocast`` in that type (fp16: CUDA only); the Grad-CAM maps and CUI values are
    computed and accumulated in float32 either way.

    On a GPU, batches are loaded by worker processes into pinned memory and copied
    asynchronously, results stay on the GPU until the end (or a checkpoint), and the network
    runs in channels-last memory format (``channels_last``; default: on CUDA only)."""
    names = parse_predictors(predictors)
    if select_by not in PREDICTORS:
        raise IsplitError(
            f"--select-by must be one of the predictors {', '.join(PREDICTORS)}, not {select_by!r}"
        )
    names = parse_predictors([*names, select_by])
    settings = AnalysisSettings(
        target=target,
        reduction=reduction,
        protocol=protocol,
        granularity=granularity,
        points=None if points is None else tuple(points),
        batch_size=batch_size,
        limit=limit,
        max_bytes=max_bytes,
        max_head_flops=max_head_flops,
        first=first,
        last=last,
        precision=precision,
        device=device,
        workers=workers,
        skip_bad_images=skip_bad_images,
        progress=progress,
        checkpoint=checkpoint,
        checkpoint_seconds=checkpoint_seconds,
        checkpoint_every=checkpoint_every,
        channels_last=channels_last,
        predictors=tuple(names),
        select_by=select_by,
        probe_ratio=PCA_PROBE_RATIO if probe_ratio is None else probe_ratio,
    )
    info = model if isinstance(model, LoadedModel) else loaded_info(model)
    if isinstance(model, LoadedModel):
        model = model.model
    if info is not None and info.model is not model:
        info = None
    model_name = model_name or (info.name if info is not None else type(model).__name__)
    record = (
        info.record()
        if info is not None
        else {"model": model_name, "weights": None, "weights_sha256": weights_fingerprint(model)}
    )
    if isinstance(data, DataLoader):
        source, n_total = (
            data,
            len(data.dataset) if limit is None else min(limit, len(data.dataset)),
        )
    else:
        data = limit_dataset(data, limit)
        source, n_total = data, len(data)
    if n_total == 0:
        raise IsplitError("the data set is empty: no images to analyse")
    if distributed.active() and isinstance(source, DataLoader):
        raise IsplitError(
            "a distributed analysis shares out a Dataset, not a DataLoader: pass the "
            "DataLoader's dataset (and its batch size as batch_size)"
        )
    job = _Job(
        settings,
        model_name,
        record,
        n_total,
        _class_names(data, classes),
        shard=distributed.shard(n_total),
        rank=distributed.rank(),
        world=distributed.world_size(),
    )
    with _frozen(model):
        return _run(model, data, source, job)


@contextlib.contextmanager
def _frozen(model: nn.Module):
    """Eval mode and no parameter gradients while analysing; the user's ``training`` flags (of
    every submodule), parameter flags, and the device and memory format of its parameters and
    buffers are restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad, p.data) for p in model.parameters()]
    buffers = [(m, dict(m._buffers)) for m in model.modules()]
    model.eval()
    for p, _, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag, data in flags:
            p.data = data
            p.requires_grad_(flag)
        for m, saved in buffers:
            m._buffers.update(saved)
        for m, mode in modes:
            m.training = mode


@dataclass
class _HostBatch:
    """A batch as the loader gave it, with where the run stands after it."""

    x: torch.Tensor
    y: torch.Tensor
    index: np.ndarray  # the images' order keys (their position among the analysed images)
    position: int  # images of the data set done after this batch (where a resume starts)
    skipped: list[str]  # unreadable files skipped so far


class _DataWait:
    """An iterator that counts the time its consumer spends waiting for the next item: how
    long the analysis loop waited for the data set rather than for the model."""

    def __init__(self, items: Iterator) -> None:
        self._items, self.seconds = items, 0.0

    def __iter__(self) -> _DataWait:
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self._items)
        finally:
            self.seconds += time.perf_counter() - start


def _timing(seconds: float, images: int, data_wait: float) -> dict:
    return {
        "seconds": round(seconds, 3),
        "images": images,
        "images_per_s": round(images / seconds, 1) if seconds > 0 else None,
        "data_wait_seconds": round(data_wait, 3),
        "data_wait_share": round(data_wait / seconds, 3) if seconds > 0 else None,
    }


class _Pending:
    """Per-batch results kept where they were computed (on a GPU: no host sync per batch),
    moved to the host in bulk into the accumulator."""

    def __init__(self) -> None:
        self._batches: list[tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]] = []

    def add(self, cui: torch.Tensor, preds: torch.Tensor, hb: _HostBatch) -> None:
        self._batches.append((cui, preds, hb.y.numpy().copy(), hb.index))  # not the pinned one

    def flush(self, acc: CurveAccumulator) -> None:
        if not self._batches:
            return
        cui, preds, labels, index = zip(*self._batches)
        acc.add(
            torch.cat(cui).float().cpu().numpy(),
            np.concatenate(labels),
            torch.cat(preds).cpu().numpy(),
            np.concatenate(index),
        )
        self._batches = []


def _host_batches(source, job: _Job, position: int) -> Iterator[_HostBatch]:
    """The batches of this process's share still to analyse, from ``position`` (images of the
    share done) on."""
    s = job.settings
    lo, hi = job.shard.start, job.shard.stop
    n_total = hi - lo
    if isinstance(source, DataLoader):  # one process only: the share is the whole data set
        loader = make_loader(source, s.batch_size, skip_bad_images=s.skip_bad_images)
        per_batch = source.batch_size or 1
        skip_batches, offset = position // per_batch, 0  # the user's loader starts over
    else:
        whole = lo == 0 and position == 0 and hi == len(source)
        rest = source if whole else Subset(source, range(lo + position, hi))
        loader = make_loader(
            rest,
            s.batch_size,
            workers=s.workers,
            skip_bad_images=s.skip_bad_images,
            device=s.device,
        )
        per_batch, skip_batches, offset = s.batch_size, 0, position
    seen = lo + position  # order keys of the rows: analysed images, from the resume point on
    for b, (x, y) in enumerate(loader):
        if b < skip_batches:
            continue
        if seen >= hi:
            break
        x, y = x[: hi - seen], y[: hi - seen]  # a DataLoader longer than --limit
        done = min((b + 1) * per_batch + offset, n_total)
        yield _HostBatch(x, y, np.arange(seen, seen + len(y)), done, list(loader.skipped))
        seen += len(y)


def _start(model: nn.Module, source, job: _Job) -> tuple:
    """Resume from the checkpoint (if any), take the first batch, trace and instrument the
    model: the accumulator, position, skipped files, input shape, batches, graph, points and
    GradCAM the run goes on with."""
    ckpt, n_total, device = job.checkpoint, len(job.shard), job.settings.device
    acc: CurveAccumulator | None = None
    preds: PredictorSet | None = None
    position, skipped, input_shape = 0, [], None
    if ckpt is not None:
        _check_other_checkpoints(job)
        _remove_partial_writes(ckpt)
    if ckpt is not None and ckpt.exists():
        acc, preds, position, skipped, input_shape = _load_checkpoint(
            ckpt, job.fingerprint, job.settings.predictors
        )
        log.warning("resuming the analysis from %s: %d of %d images done", ckpt, position, n_total)
    batches = _host_batches(source, job, position)
    first = next(batches, None)
    if first is not None:
        input_shape = list(first.x.shape[1:])
        batches = itertools.chain([first], batches)
    if input_shape is None:
        raise IsplitError("no images were analysed (all skipped, or the data set is empty)")
    graph, chosen, cam = _instrument(model, input_shape, job)
    if acc is None:
        acc = _new_accumulator(len(chosen), job.class_names, cam, input_shape, device)
    if preds is None:
        preds = PredictorSet(job.settings.predictors, len(chosen), len(acc.counts))
    return acc, preds, position, skipped, input_shape, batches, graph, chosen, cam


def _run(model: nn.Module, data, source, job: _Job) -> Analysis:
    s = job.settings
    device, n_total, fingerprint, ckpt = s.device, len(job.shard), job.fingerprint, job.checkpoint
    # every process resumes and starts (or all stop with the same error)
    try:
        start = distributed.agree(lambda: _start(model, source, job))
    except KeyboardInterrupt:
        earlier = ckpt is not None and ckpt.exists()
        raise AnalysisInterrupted(
            f"interrupted before the first batch; {ckpt} is unchanged: rerun to resume from it"
            if earlier
            else "interrupted before any image was analysed; nothing was saved"
        ) from None
    acc, preds, position, skipped, input_shape, batches, graph, chosen, cam = start
    resumed_skipped = skipped
    channels_last = s.channels_last if s.channels_last is not None else device.type == "cuda"
    if channels_last:
        cam.module.to(memory_format=torch.channels_last)

    def checked(items: Iterator[_HostBatch]):
        """Labels are checked on the host, before the copy: no GPU sync for it."""
        for hb in items:
            check_labels(hb.y, len(acc.counts), "the data set's")
            if s.target == "label" and cam.num_classes is not None:
                check_labels(hb.y, cam.num_classes)
            yield hb.x, hb.y, hb

    pending = _Pending()
    last_save, unsaved = time.monotonic(), 0
    bar = _progress(total=n_total, initial=position, enabled=s.progress and job.rank == 0)
    waited, started, analysed = _DataWait(batches), time.perf_counter(), 0
    try:
        for x, y, hb in to_device(checked(waited), device, channels_last):
            res = cam(x, y, target=s.target, extras=preds.needs)
            pending.add(res.cui, res.logits.argmax(1), hb)
            preds.add(res, hb.y.numpy().copy(), hb.index)
            bar.update(len(hb.y))
            position, skipped = hb.position, resumed_skipped + hb.skipped
            analysed += len(hb.y)
            unsaved += 1
            if s.checkpoint_due(unsaved, time.monotonic() - last_save):
                pending.flush(acc)
                _save_checkpoint(ckpt, acc, preds, position, skipped, fingerprint, input_shape)
                last_save, unsaved = time.monotonic(), 0
    except KeyboardInterrupt:
        pending.flush(acc)
        message = _interrupted(
            ckpt, acc, preds, position, n_total, skipped, fingerprint, input_shape
        )
        raise AnalysisInterrupted(message) from None
    finally:
        bar.close()
    pending.flush(acc)  # on a GPU: waits for the last batches' work
    timing = _timing(time.perf_counter() - started, analysed, waited.seconds)
    if job.world > 1:  # every process gets every process's curves, in data set order
        acc, preds, skipped = _gather(acc, preds, skipped)
    if acc.images == 0:
        raise IsplitError("no images were analysed (all skipped, or the data set is empty)")
    class_names = job.class_names or [str(i) for i in range(len(acc.counts))]
    curve = acc.global_curve()
    values = preds.values(probe_ratio=s.probe_ratio)
    selection = curve if s.select_by == "cui" else values[s.select_by]
    mask = [p.admissible for p in chosen]
    best = best_point(selection, mask)
    arrays = acc.arrays()
    class_curves = acc.class_curves()
    result = Analysis(
        model=job.model_name,
        dataset={**_dataset_info(data, class_names), "images": acc.images},
        settings=job.settings_json(input_shape),
        points=chosen,
        cui=curve,
        per_class={c: class_curves[i] for i, c in enumerate(class_names)},
        per_image=arrays["cui"],
        labels=arrays["labels"],
        predictions=arrays["predictions"],
        candidates=[chosen[i].name for i in local_maxima(selection, mask)],
        best=None if best is None else chosen[best].name,
        skipped_images=skipped,
        total_flops=float(graph.total_flops),
        total_params=int(sum(p.numel() for p in model.parameters())),
        fingerprint=fingerprint,
        predictors=values,
        select_by=s.select_by,
        timing=timing,
    )
    if ckpt is not None and ckpt.exists():
        ckpt.unlink()
    return result


def _no_admissible(points: list[SplitPoint], budget: dict) -> str:
    given = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in budget.items() if v is not None)
    smallest = min((p for p in points if p.spatial), key=lambda p: p.bytes, default=None)
    cheapest = min((p for p in points if p.spatial), key=lambda p: p.head_flops, default=None)
    hint = (
        ""
        if smallest is None
        else f" (the smallest spatial point sends {smallest.bytes} bytes; the cheapest head "
        f"has {cheapest.head_flops:.3g} FLOPs)"
    )
    return (
        f"no split point is admissible under {given or 'these settings'}{hint}; relax the "
        "budget or choose other --points"
    )


def _interrupted(
    ckpt: Path | None,
    acc: CurveAccumulator | None,
    preds: PredictorSet | None,
    position: int,
    n_total: int,
    skipped: list[str],
    fingerprint: str,
    input_shape: list[int] | None,
) -> str:
    """Save what an interrupted analysis has done; the message says what and how to resume."""
    if ckpt is None or acc is None or acc.images == 0:
        return "interrupted before any image was analysed; nothing was saved"
    _save_checkpoint(ckpt, acc, preds, position, skipped, fingerprint, input_shape)
    return (
        f"interrupted: {position} of {n_total} images analysed, saved in {ckpt}; rerun the "
        "same command to resume from there"
    )


def _instrument(
    model: nn.Module, input_shape: Sequence[int], job: _Job
) -> tuple[ModelGraph, list[SplitPoint], GradCAM]:
    """Trace the model for this input shape, choose and restrict the points, instrument them."""
    s = job.settings
    graph = ModelGraph(model, tuple(input_shape), s.granularity)
    chosen = select_points(graph, s.points, s.protocol, job.model_name)
    restrict(chosen, **s.budget)
    if not any(p.admissible for p in chosen):
        raise IsplitError(_no_admissible(chosen, s.budget))
    cam = GradCAM(graph, [p.name for p in chosen], s.reduction, s.precision).to(s.device)
    return graph, chosen, cam


def _new_accumulator(
    k: int,
    class_names: list[str] | None,
    cam: GradCAM,
    input_shape: Sequence[int],
    device: torch.device,
) -> CurveAccumulator:
    if class_names:
        return CurveAccumulator(k, len(class_names))
    with torch.no_grad():  # unknown classes: as many as the model has outputs
        logits = cam.module(torch.zeros(1, *input_shape, device=device))[0]
    return CurveAccumulator(k, int(logits.shape[1]))


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, initial: int, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # the progress bar is optional
        return _NoBar()
    return tqdm(
        total=total,
        initial=initial,
        unit="img",
        desc="analysing",
        disable=not enabled or not sys.stderr.isatty(),
        leave=False,
    )


def _save_checkpoint(
    path: Path,
    acc: CurveAccumulator,
    preds: PredictorSet | None,
    position: int,
    skipped: list[str],
    fingerprint: str,
    input_shape: list[int] | None,
) -> None:
    meta = {
        "position": position,
        "skipped": skipped,
        "fingerprint": fingerprint,
        "input_shape": input_shape,
    }
    more = preds.state() if preds is not None else {}
    atomic_write_npz(path, meta=np.array(json.dumps(meta)), **acc.state(), **more)


def _gather(
    acc: CurveAccumulator, preds: PredictorSet, skipped: list[str]
) -> tuple[CurveAccumulator, PredictorSet, list[str]]:
    """Merge the accumulators, predictor states (and skipped files) of all processes: sums and
    counts add up, per-image rows keep their data set order."""
    mine = {**acc.state(), **preds.state(), "skipped": np.array(skipped, dtype=str)}
    parts = distributed.all_gather_arrays(mine)
    merged, merged_preds = _from_state(parts[0], preds.names)
    for part in parts[1:]:
        a, p = _from_state(part, preds.names)
        merged.merge(a)
        merged_preds.merge(p)
    return merged, merged_preds, [str(f) for part in parts for f in part["skipped"]]


def _from_state(
    state: dict[str, np.ndarray], predictors: Sequence[str]
) -> tuple[CurveAccumulator, PredictorSet]:
    """The accumulator and predictor states held in a checkpoint's (or a shard's) arrays."""
    acc = CurveAccumulator.from_state(
        {k: v for k, v in state.items() if not k.startswith("predictor/") and k != "skipped"}
    )
    preds = PredictorSet.from_state(predictors, acc.sums.shape[1], len(acc.counts), state)
    return acc, preds


def _check_other_checkpoints(job: _Job) -> None:
    """Checkpoints of the same run folder made with another number of processes cannot be
    resumed by this one: say so instead of starting afresh beside them."""
    base, mine = job.settings.checkpoint, job.checkpoint
    others = [base] if base != mine and base.exists() else []
    pattern = f"{base.stem}-rank*-of-*{base.suffix}"
    suffix = f"-of-{job.world}{base.suffix}"
    others += [
        p for p in base.parent.glob(pattern) if job.world == 1 or not p.name.endswith(suffix)
    ]
    if not others:
        return
    counts = sorted({int(p.stem.rsplit("-of-", 1)[1]) if "-of-" in p.stem else 1 for p in others})
    k = counts[0]
    raise IsplitError(
        f"{base.parent} holds checkpoints of an analysis on {k} process(es) "
        f"({', '.join(sorted(p.name for p in others))}); rerun it with --nproc {k} to resume, "
        "or delete them to start afresh"
    )


def _remove_partial_writes(path: Path) -> None:
    """Delete temporary files that a run killed while writing its checkpoint left behind."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def _load_checkpoint(
    path: Path, fingerprint: str, predictors: Sequence[str]
) -> tuple[CurveAccumulator, PredictorSet, int, list[str], list[int] | None]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            state = {k: npz[k] for k in npz.files}
        meta = json.loads(str(state.pop("meta")))
    except (OSError, ValueError, KeyError) as e:
        raise IsplitError(
            f"cannot read the checkpoint {path} ({e}); delete it to start the analysis afresh"
        ) from None
    if meta.get("fingerprint") != fingerprint:
        raise IsplitError(
            f"{path} holds a checkpoint of a different analysis (other model or weights, "
            "data or settings); rerun with the same ones to resume, or delete it or use another "
            "--out to start afresh"
        )
    acc, preds = _from_state(state, predictors)
    return acc, preds, int(meta["position"]), list(meta["skipped"]), meta.get("input_shape")
