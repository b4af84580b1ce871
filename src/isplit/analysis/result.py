"""The result of an analysis (:class:`Analysis`): the CUI curves, the further predictors, the
candidates and the best split; its run folder files (``curves.json``, ``per_image.npz``) and
its text tables."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from isplit import checks
from isplit.analysis.curves import best_point
from isplit.analysis.picks import Pick, picks, picks_json, picks_lines
from isplit.errors import IsplitError
from isplit.graph.points import SplitPoint, no_admissible_message
from isplit.importance.registry import PCA_PROBE_RATIO, predictor_label
from isplit.io import atomic_write_json, atomic_write_npz, staged
from isplit.runfolder import FORMAT, RunFolder
from isplit.texttable import text_table

if TYPE_CHECKING:
    from isplit.models import LoadedModel

#: Head-FLOP budgets (shares of the model's FLOPs) shown beside the unconstrained best split.
STANDARD_FLOP_SHARES = (0.25, 0.5)
#: A head holding at least this share of the model's FLOPs leaves (nearly) nothing to the server.
NEARLY_ALL = 0.9


class _WhenRead:
    """An :class:`Analysis` field that a pending step completes the first time it is read
    (:meth:`Analysis.when_read`); ``default`` as a dataclass field's, none when not given."""

    def __init__(self, *default: object) -> None:
        self._default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self._key = "_" + name

    def __get__(self, obj: Analysis | None, owner: type | None = None):
        if obj is None:  # the dataclass asks for the field's default
            if not self._default:
                raise AttributeError(self._key)
            return self._default[0]
        pending = obj.__dict__.pop("_pending", None)
        if pending is not None:
            pending(obj)
        return obj.__dict__[self._key]

    def __set__(self, obj: Analysis, value: object) -> None:
        obj.__dict__[self._key] = value


@dataclass
class Analysis:
    """The result of an I-SPLIT analysis (CUI, candidates and best split as the README's "What it
    computes" defines them)."""

    model: str
    dataset: dict  # name, split, images, classes
    settings: dict = _WhenRead()  # target, reduction, protocol, batch_size, input_shape, ...
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
    fingerprint: str | None = _WhenRead(None)  # model, weights, data and settings of the run
    # further predictors of post-split accuracy (isplit.importance.predictors): name -> [K]
    predictors: dict[str, np.ndarray] = field(default_factory=dict)
    select_by: str = "cui"  # the predictor whose maximum is the best split
    # how the analysis loop spent its time in this call (under torchrun: every process's
    # images in the slowest one's time, and ``processes``): seconds, images, images_per_s,
    # data_wait_seconds, data_wait_share
    timing: dict | None = None
    # the self-checks of this run (isplit.checks): recorded under curves.json's ``checks``
    checks: list = field(default_factory=list)

    def when_read(self, complete: Callable[[Analysis], None]) -> Analysis:
        """Leave ``settings``' ``weights_sha256`` and ``fingerprint`` to ``complete``, called
        the first time either is read (saving reads them): an analysis used only in memory does
        not pay for a pass over the weights."""
        self.__dict__["_pending"] = complete
        return self

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
    def probe_ratio(self) -> int:
        """pca-probe's bottleneck ratio in this run (channels / ratio principal components)."""
        return int(self.settings.get("probe_ratio", PCA_PROBE_RATIO))

    @property
    def leaf_modules(self) -> list[str]:
        """The submodules this run traced as one node, the user's and those torch.fx cannot
        trace into (pass them to ``ModelGraph`` to rebuild its graph)."""
        return [*self.settings.get("leaf_modules", []), *self.settings.get("auto_leaf_modules", [])]

    def label(self, name: str) -> str:
        """Predictor ``name``'s label in tables, figures and the report, with this run's
        pca-probe ratio."""
        return predictor_label(name, self.probe_ratio)

    @property
    def selection(self) -> np.ndarray:
        """The curve whose maximum over the admissible points is the best split."""
        return self.curve(self.select_by)

    @property
    def picks(self) -> dict[str, Pick]:
        """I-SPLIT's pick (``"isplit"``: the CUI maximum over the admissible points) and, when
        this run computed pca-probe, the evidence-backed one (``"evidence"``), with their
        points, values and head costs (:mod:`isplit.analysis.picks`)."""
        return picks(self)

    def picks_text(self) -> str:
        """Both picks in words with the reason for the second (one line when they agree); empty
        without the evidence-backed pick."""
        return "\n".join(picks_lines(self))

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
            "checks": checks.to_json(self.checks),
            "candidates": self.candidates,
            "best": self.best,
            "picks": picks_json(self),
            "nearly_all_on_device": self.nearly_all_on_device,
            "budget_picks": self.budget_picks(),
            "per_class": {k: [_num(v) for v in vals] for k, vals in self.per_class.items()},
        }

    def save(self, out: str | os.PathLike) -> Path:
        """Write ``curves.json`` and ``per_image.npz`` into ``out`` (the data only: the commands
        draw ``curves.png`` from it, :func:`isplit.report.outputs.save_analysis`)."""
        folder = RunFolder(out)
        folder.root.mkdir(parents=True, exist_ok=True)
        with staged():  # both files, or neither (a full disk half-way)
            atomic_write_npz(
                folder.per_image,
                cui=self.per_image,
                labels=self.labels,
                predictions=self.predictions,
                points=np.array(self.point_names, dtype=str),
            )
            atomic_write_json(folder.curves, {"format": FORMAT, **self.to_json()})
            folder.set_aside_stale(self.fingerprint)  # once the new results are all written
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
            checks=checks.from_json(doc.get("checks")),
        )

    def load_model(self) -> LoadedModel:
        """Rebuild the network this run analysed: same name, weights, seed and preprocessing;
        an error when its weights no longer match the run's fingerprint."""
        from isplit.models import load_recorded

        return load_recorded({"model": self.model, **self.settings})

    def table(self) -> str:
        """A short text table of the points: size, head FLOPs (and their share of the model's),
        log10 CUI, the further predictors (named under the table), and marks: best, candidate,
        the pick under each standard FLOP budget."""
        picks: dict[str, list[str]] = {}
        for b in self.budget_picks():
            if b["best"] is not None:
                picks.setdefault(b["best"], []).append(f"best<={b['max_flop_share']:.0%}")
        header = ["point", "layout", "shape", "bytes", "MFLOPs", "FLOPs%", "log10 CUI"]
        header += [*self.predictors, ""]
        rows = []
        for i, (p, c) in enumerate(zip(self.points, self.cui)):
            mark = (
                "best"
                if p.name == self.best
                else ("cand" if p.name in self.candidates else ("" if p.admissible else "-"))
            )
            mark = " ".join([mark, *picks.get(p.name, [])]).strip()
            lc = "n/a" if not np.isfinite(c) else (f"{np.log10(c):.3f}" if c > 0 else "-inf")
            share = self.flop_share(p)
            rows.append(
                [
                    p.name,
                    p.layout.axes,
                    "x".join(map(str, p.shape)),
                    str(p.bytes),
                    f"{p.head_flops / 1e6:.1f}",
                    "" if share is None else f"{100 * share:.1f}",
                    lc,
                    *(f"{v[i]:.4f}" for v in self.predictors.values()),
                    mark,
                ]
            )
        rows = [text_table(header, rows, left=2)]
        if self.predictors:
            rows.append("; ".join(f"{n}: {self.label(n)}" for n in self.predictors))
        return "\n".join(rows)

    def recommendation(self) -> str:
        if self.best is None:
            return self._no_best()
        p = self.point(self.best)
        fs, ps = self.flop_share(p), self.param_share(p)
        shares = (
            ""
            if fs is None
            else f" = {fs:.0%} of the model's FLOPs"
            + ("" if ps is None else f", {ps:.0%} of its parameters")
        )
        by = "" if self.select_by == "cui" else f" (by {self.select_by})"
        if (fell := self._fallback()) is not None:
            by = f" (by CUI: the selected {fell.values['predictor']} {fell.values['reason']})"
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

    def _fallback(self) -> checks.Check | None:
        """The failed check of the predictor the run was asked to select by, when the best split
        fell back to CUI's (:func:`isplit.analysis.picks.select`)."""
        return next(
            (
                c
                for c in checks.failed(self.checks)
                if c.name == "predictor_usable" and c.values.get("role") == "select_by"
            ),
            None,
        )

    def _no_best(self) -> str:
        """Why the run has no best split, in words: no admissible point (under the budgets
        given, named), or no finite value of the selecting curve at any admissible point."""
        admissible = [p for p in self.points if p.admissible]
        if not admissible:
            keys = ("max_bytes", "max_head_flops", "first", "last")
            return no_admissible_message(self.points, {k: self.settings.get(k) for k in keys})
        fell = self._fallback()
        also = "" if fell is None else f" (nor has the selected {fell.values['predictor']})"
        what = "the CUI" if self.select_by == "cui" else self.select_by
        return (
            f"no best split: {what} has no finite value at any of the {len(admissible)} "
            f"admissible points{also}: the model's outputs or gradients overflowed, or the "
            "images hold NaN / inf; check the input normalisation (--mean/--std), or try "
            "--precision fp32"
        )


def _num(v) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None
