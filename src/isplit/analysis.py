"""The I-SPLIT analysis: model + data -> CUI curves -> candidates and best split.

``analyze`` streams the data through ``GradCAM`` once, accumulating per-image CUI curves, and
returns an ``Analysis`` that saves to (and loads from) a run folder: ``curves.json``,
``per_image.npz`` and ``curves.png``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from isplit.curves import CurveAccumulator, best_point, local_maxima
from isplit.data import limit_dataset, make_loader
from isplit.errors import IsplitError, did_you_mean
from isplit.graph import ModelGraph, SplitPoint
from isplit.importance import REDUCTIONS, TARGETS, GradCAM
from isplit.io import atomic_write_json, atomic_write_npz, read_json
from isplit.models import LoadedModel, loaded_info, resolve_device, weights_fingerprint
from isplit.predictors import PREDICTORS, PredictorSet, parse_predictors
from isplit.protocols import PROTOCOLS, official_points

log = logging.getLogger("isplit")

CHECKPOINT = "checkpoint.npz"
#: Files and folders in a run folder derived from its analysis (made by classes, validate,
#: report, plan): stale once a different analysis is written there.
DERIVED = (
    "classes.json",
    "classes.png",
    "classes-validation",
    "validation.json",
    "validation.png",
    "validation_points",
    "report.html",
    "plan.json",
    "plan.png",
)
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
    # further predictors of post-split accuracy (isplit.predictors): name -> [K]
    predictors: dict[str, np.ndarray] = field(default_factory=dict)
    select_by: str = "cui"  # the predictor whose maximum is the best split

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
            "candidates": self.candidates,
            "best": self.best,
            "nearly_all_on_device": self.nearly_all_on_device,
            "budget_picks": self.budget_picks(),
            "per_class": {k: [_num(v) for v in vals] for k, vals in self.per_class.items()},
        }

    def save(self, out: str | os.PathLike, plot: bool = True) -> Path:
        """Write ``curves.json``, ``per_image.npz`` and (``plot``) ``curves.png`` into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self._set_aside_stale(out)
        atomic_write_npz(
            out / "per_image.npz",
            cui=self.per_image,
            labels=self.labels,
            predictions=self.predictions,
            points=np.array(self.point_names, dtype=str),
        )
        atomic_write_json(out / "curves.json", self.to_json())
        if plot:
            from isplit.plot import plot_curves

            plot_curves(self, out / "curves.png")
        return out

    def _set_aside_stale(self, out: Path) -> None:
        """Move results derived from another analysis in ``out`` to ``out/previous/``."""
        old = out / "curves.json"
        if not old.exists():
            return
        try:
            before = json.loads(old.read_text()).get("fingerprint")
        except (OSError, ValueError):
            before = None
        if before is not None and before == self.fingerprint:
            return  # the same analysis again: what was derived from it still holds
        stale = [out / name for name in DERIVED if (out / name).exists()]
        if not stale:
            return
        aside = out / "previous"
        if aside.exists():
            shutil.rmtree(aside)
        aside.mkdir()
        for path in stale:
            path.rename(aside / path.name)
        log.warning(
            "%s held results of a different analysis (%s); moved them to %s",
            out,
            ", ".join(p.name for p in stale),
            aside,
        )

    @classmethod
    def load(cls, run: str | os.PathLike) -> Analysis:
        run = Path(run)
        doc = read_json(run / "curves.json", what="analysis run")
        npz_path = run / "per_image.npz"
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
        if names is not None:
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
    model_name: str | None = None,
    workers: int | None = None,
    skip_bad_images: bool = False,
    progress: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_seconds: float = 60.0,
    predictors: str | Sequence[str] | None = None,
    select_by: str = "cui",
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
    pass (:data:`isplit.predictors.PREDICTORS`; CUI always); ``select_by``: the one whose maximum
    over the admissible points is the best split (default ``cui``; added to ``predictors``)."""
    names = parse_predictors(predictors)
    if select_by not in PREDICTORS:
        raise IsplitError(
            f"--select-by must be one of the predictors {', '.join(PREDICTORS)}, not {select_by!r}"
        )
    names = parse_predictors([*names, select_by])
    if protocol not in PROTOCOLS:
        raise IsplitError(f"--protocol must be one of {PROTOCOLS}, not {protocol!r}")
    if protocol == "official":
        target = "predicted"
    if target not in TARGETS:
        raise IsplitError(f"--target must be one of {TARGETS}, not {target!r}")
    if reduction not in REDUCTIONS:
        raise IsplitError(f"--reduction must be one of {REDUCTIONS}, not {reduction!r}")
    if batch_size < 1:
        raise IsplitError("--batch-size must be at least 1")
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
    device = resolve_device(device)
    class_names = _class_names(data, classes)

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

    with _frozen(model):
        return _run(
            model=model,
            record=record,
            data=data,
            source=source,
            n_total=n_total,
            points=points,
            target=target,
            reduction=reduction,
            protocol=protocol,
            granularity=granularity,
            batch_size=batch_size,
            limit=limit,
            device=device,
            class_names=class_names,
            max_bytes=max_bytes,
            max_head_flops=max_head_flops,
            first=first,
            last=last,
            model_name=model_name,
            workers=workers,
            skip_bad_images=skip_bad_images,
            progress=progress,
            checkpoint=checkpoint,
            checkpoint_seconds=checkpoint_seconds,
            predictors=names,
            select_by=select_by,
        )


@contextlib.contextmanager
def _frozen(model: nn.Module):
    """Eval mode and no parameter gradients while analysing; the user's ``training`` flags (of
    every submodule) and parameter flags are restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


def _run(
    *,
    model,
    record,
    data,
    source,
    n_total,
    points,
    target,
    reduction,
    protocol,
    granularity,
    batch_size,
    limit,
    device,
    class_names,
    max_bytes,
    max_head_flops,
    first,
    last,
    model_name,
    workers,
    skip_bad_images,
    progress,
    checkpoint,
    checkpoint_seconds,
    predictors,
    select_by,
) -> Analysis:
    settings = {
        "target": target,
        "reduction": reduction,
        "protocol": protocol,
        "granularity": granularity,
        "batch_size": batch_size,
        "limit": limit,
        "device": device.type,
        "weights": record.get("weights"),
        "seed": record.get("seed"),
        "weights_sha256": record["weights_sha256"],
        "predictors": predictors,
        "select_by": select_by,
    }
    if record.get("num_classes") is not None:
        settings["num_classes"] = record["num_classes"]
    if record.get("preprocess") is not None:
        settings["preprocess"] = record["preprocess"]
    acc: CurveAccumulator | None = None
    preds: PredictorSet | None = None
    start = 0
    ckpt = Path(checkpoint) if checkpoint else None
    budget = {
        "max_bytes": max_bytes,
        "max_head_flops": max_head_flops,
        "first": first,
        "last": last,
    }
    fingerprint = hashlib.sha256(
        json.dumps(
            [model_name, list(points or []), settings, budget, n_total, class_names],
            default=str,
        ).encode()
    ).hexdigest()[:16]
    resumed_skipped: list[str] = []  # bad files skipped before a resume
    if ckpt is not None and ckpt.exists():
        acc, preds, start, resumed_skipped = _load_checkpoint(ckpt, fingerprint, predictors)
        log.warning("resuming the analysis from %s: %d of %d images done", ckpt, start, n_total)

    if isinstance(source, DataLoader):
        loader = make_loader(source, batch_size, skip_bad_images=skip_bad_images)
        per_batch = source.batch_size or 1
        skip_batches = start // per_batch
    else:
        rest = source if start == 0 else torch.utils.data.Subset(source, range(start, n_total))
        loader = make_loader(rest, batch_size, workers=workers, skip_bad_images=skip_bad_images)
        skip_batches, per_batch = 0, batch_size

    graph = cam = chosen = None
    skipped = resumed_skipped
    seen = position = start
    last_save = time.monotonic()
    bar = _progress(total=n_total, initial=start, enabled=progress)
    try:
        for b, (x, y) in enumerate(loader):
            if b < skip_batches:
                continue
            if limit is not None and seen >= n_total:
                break
            if limit is not None and isinstance(source, DataLoader):
                x, y = x[: n_total - seen], y[: n_total - seen]
            if graph is None:
                graph = ModelGraph(model, tuple(x.shape[1:]), granularity)
                chosen = select_points(graph, points, protocol, model_name)
                restrict(chosen, **budget)
                if not any(p.admissible for p in chosen):
                    raise IsplitError(_no_admissible(chosen, budget))
                cam = GradCAM(graph, [p.name for p in chosen], reduction).to(device)
                settings["input_shape"] = list(x.shape[1:])
            if acc is None:
                n_classes = len(class_names) if class_names else None
                acc = _new_accumulator(len(chosen), n_classes, cam, x, device)
            if preds is None:
                preds = PredictorSet(predictors, len(chosen), len(acc.counts))
            res = cam(x.to(device), y.to(device), target=target, extras=preds.needs)
            labels = y.numpy()
            if labels.size and labels.max() >= len(acc.counts):
                raise IsplitError(
                    f"label {labels.max()} is outside the {len(acc.counts)} classes of the data set"
                )
            index = np.arange(seen, seen + len(labels))
            acc.add(res.cui.cpu().numpy(), labels, res.logits.argmax(1).cpu().numpy(), index)
            preds.add(res, labels, index)
            seen += len(labels)
            bar.update(len(labels))
            skipped = resumed_skipped + list(loader.skipped)
            position = min((b + 1) * per_batch + (0 if skip_batches else start), n_total)
            if ckpt is not None and time.monotonic() - last_save > checkpoint_seconds:
                _save_checkpoint(ckpt, acc, preds, position, skipped, fingerprint)
                last_save = time.monotonic()
    except KeyboardInterrupt:
        message = _interrupted(ckpt, acc, preds, position, n_total, skipped, fingerprint)
        raise AnalysisInterrupted(message) from None
    finally:
        bar.close()
    if acc is None or acc.images == 0:
        raise IsplitError("no images were analysed (all skipped, or the data set is empty)")
    if graph is None:  # everything came from the checkpoint
        raise IsplitError(f"{ckpt} already holds a finished analysis; delete it to rerun")
    if class_names is None:
        class_names = [str(i) for i in range(len(acc.counts))]
    settings.update(budget)
    curve = acc.global_curve()
    values = preds.values()
    selection = curve if select_by == "cui" else values[select_by]
    mask = [p.admissible for p in chosen]
    best = best_point(selection, mask)
    arrays = acc.arrays()
    class_curves = acc.class_curves()
    result = Analysis(
        model=model_name,
        dataset={**_dataset_info(data, class_names), "images": acc.images},
        settings=settings,
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
        select_by=select_by,
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
) -> str:
    """Save what an interrupted analysis has done; the message says what and how to resume."""
    if ckpt is None or acc is None or acc.images == 0:
        return "interrupted before any image was analysed; nothing was saved"
    _save_checkpoint(ckpt, acc, preds, position, skipped, fingerprint)
    return (
        f"interrupted: {position} of {n_total} images analysed, saved in {ckpt}; rerun the "
        "same command to resume from there"
    )


def _new_accumulator(
    k: int, n_classes: int | None, cam: GradCAM, x: torch.Tensor, device: torch.device
) -> CurveAccumulator:
    if n_classes is None:  # unknown: as many as the model has outputs
        with torch.no_grad():
            n_classes = int(cam.module(x[:1].to(device))[0].shape[1])
    return CurveAccumulator(k, n_classes)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

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
) -> None:
    meta = json.dumps({"position": position, "skipped": skipped, "fingerprint": fingerprint})
    more = preds.state() if preds is not None else {}
    atomic_write_npz(path, meta=np.array(meta), **acc.state(), **more)


def _load_checkpoint(
    path: Path, fingerprint: str, predictors: Sequence[str]
) -> tuple[CurveAccumulator, PredictorSet, int, list[str]]:
    with np.load(path, allow_pickle=False) as npz:
        state = {k: npz[k] for k in npz.files}
    meta = json.loads(str(state.pop("meta")))
    if meta["fingerprint"] != fingerprint:
        raise IsplitError(
            f"{path} holds a checkpoint of a different analysis (other model or weights, "
            "data or settings); rerun with the same ones to resume, or delete it or use another "
            "--out to start afresh"
        )
    acc = CurveAccumulator.from_state(
        {k: v for k, v in state.items() if not k.startswith("predictor/")}
    )
    preds = PredictorSet.from_state(predictors, acc.sums.shape[1], len(acc.counts), state)
    return acc, preds, int(meta["position"]), list(meta["skipped"])
