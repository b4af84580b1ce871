"""Every figure isplit draws, each written as a PNG by :func:`save_figure`: the CUI curve (log10)
with candidates and best split and the CDE curve under it (``curves.png``), validation
(``validation.png``), the Grad-CAM maps of sample images (the report), the per-class heat map
(``classes.png``) and the latency plan (``plan.png``)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.layout_engine import ConstrainedLayoutEngine  # noqa: E402

from isplit.io import atomic_write_bytes  # noqa: E402
from isplit.report.markup import log10_cui  # noqa: E402

if TYPE_CHECKING:
    from isplit.analysis import Analysis
    from isplit.report.maps import SampleMaps


def _log10(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, np.log10(v), np.nan)


def _cde_axis(ax, analysis) -> None:
    """The output-size (CDE) curve over the points, with the point names under it."""
    names = analysis.point_names
    x = np.arange(len(names))
    size = np.array([p.bytes for p in analysis.points], dtype=float)
    ax.plot(x, size / 1024, "s-", color="tab:green", ms=3, label="output size (CDE)")
    ax.set_yscale("log")
    ax.set_ylabel("tensor crossing the link\n(KiB at batch 1, log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=70, ha="right", fontsize=7)
    ax.set_xlabel("split point (network order)")


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Write ``fig`` to ``path`` as a PNG (110 dpi) atomically, and close it.

    The figure is laid out tightly first unless it carries a layout engine of its own
    (``layout="constrained"``). The file appears whole or not at all: a crash mid-write leaves
    the file that was there before."""
    if not isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):
        fig.tight_layout()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110)
    finally:
        plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def _normalised(values, mask) -> np.ndarray:
    """``values`` scaled to [0, 1] over the points in ``mask`` (min-max), for one shared axis."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v) & np.asarray(mask, bool)
    if not finite.any():
        return np.full(len(v), np.nan)
    lo, hi = v[finite].min(), v[finite].max()
    return (v - lo) / (hi - lo) if hi > lo else np.where(np.isfinite(v), 0.5, np.nan)


def _predictor_axis(ax, analysis, admissible) -> None:
    """Every predictor of the run at the admissible points, min-max normalised there (log10 for
    CUI), each one's maximum marked; the selecting predictor's candidates starred."""
    x = np.arange(len(analysis.points))
    for j, name in enumerate(analysis.predictor_names):
        values = _log10(analysis.cui) if name == "cui" else analysis.curve(name)
        y = np.where(admissible, _normalised(values, admissible), np.nan)
        chosen = name == analysis.select_by
        label = ("log10 " if name == "cui" else "") + name
        if chosen:
            label += " (selects the best split)"
        line = ax.plot(x, y, ".-", lw=2.2 if chosen else 1.2, label=label, color=f"C{j}")[0]
        top = np.where(admissible, np.nan_to_num(y, nan=-np.inf), -np.inf)
        ax.plot([int(np.argmax(top))], [np.max(top)], "o", ms=7, color=line.get_color())
    names = analysis.point_names
    cand = [names.index(c) for c in analysis.candidates]
    sel = _normalised(
        _log10(analysis.cui) if analysis.select_by == "cui" else analysis.selection, admissible
    )
    if cand:
        ax.plot(x[cand], sel[cand], "*", color="black", ms=12, label="candidate (local max)")
    ax.set_ylabel("predictor, scaled to [0, 1]\nover the admissible points")
    ax.set_ylim(-0.05, 1.1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(
        "predictors of post-split accuracy at the admissible points (large dot: maximum)",
        fontsize=9,
    )


def plot_curves(analysis: Analysis, path: str | Path) -> None:
    """Write ``curves.png`` for an ``Analysis``: log10 CUI, the further predictors (when the run
    has any) and the output-size (CDE) curve."""
    names = analysis.point_names
    x = np.arange(len(names))
    admissible = np.array([p.admissible for p in analysis.points])
    y = _log10(analysis.cui)
    width = max(8.0, 0.32 * len(names) + 2)
    more = bool(analysis.predictors)
    fig, axes = plt.subplots(
        3 if more else 2,
        1,
        figsize=(width, 10.5 if more else 7.5),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 3, 2] if more else [3, 2]},
    )
    ax = axes[0]
    ax.plot(x, y, "-", color="tab:blue", lw=1.5, label="CUI (mean over images)")
    ax.plot(x[admissible], y[admissible], "o", color="tab:blue", ms=4, label="admissible point")
    ax.plot(
        x[~admissible],
        y[~admissible],
        "o",
        mfc="white",
        color="tab:gray",
        ms=4,
        label="not admissible",
    )
    cand = [names.index(c) for c in analysis.candidates]
    if cand and analysis.select_by == "cui":
        ax.plot(x[cand], y[cand], "*", color="tab:orange", ms=14, label="candidate (local max)")
    if analysis.best is not None:
        b = names.index(analysis.best)
        by = "" if analysis.select_by == "cui" else f" (by {analysis.select_by})"
        for a in axes[:-1]:
            a.axvline(b, color="tab:red", ls="--", lw=1)
        ax.plot([b], [y[b]], "*", color="tab:red", ms=18, label=f"best split{by}: {analysis.best}")
    s = analysis.settings
    ax.set_ylabel("log10 CUI")
    ax.set_title(
        f"I-SPLIT: {analysis.model} on {analysis.dataset.get('name')} "
        f"({analysis.dataset.get('images')} images; target={s.get('target')}, "
        f"reduction={s.get('reduction')}, protocol={s.get('protocol')})",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if more:
        _predictor_axis(axes[1], analysis, admissible)

    _cde_axis(axes[-1], analysis)
    save_figure(fig, path)


def plot_validation(analysis: Analysis, report: dict, path: str | Path) -> None:
    """Write ``validation.png``: log10 CUI and measured accuracy over the points, CDE under it."""
    names = analysis.point_names
    x = np.arange(len(names))
    width = max(8.0, 0.32 * len(names) + 2)
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(width, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    ax.plot(x, _log10(analysis.cui), "o-", color="tab:blue", ms=3, label="log10 CUI")
    ax.set_ylabel("log10 CUI", color="tab:blue")
    acc_ax = ax.twinx()
    vx = [names.index(p["name"]) for p in report["points"]]
    acc = [100 * p["accuracy"] for p in report["points"]]
    acc_ax.plot(vx, acc, "D-", color="tab:red", ms=6, label="accuracy with bottleneck")
    probe = [100 * p["probe_accuracy"] for p in report["points"]]
    acc_ax.plot(vx, probe, "x:", color="tab:purple", ms=6, label="logistic probe accuracy")
    if "probe" in analysis.predictors:
        adm = np.array([p.admissible for p in analysis.points])
        held = np.where(adm, 100 * analysis.predictors["probe"], np.nan)
        acc_ax.plot(x, held, ".:", color="tab:brown", ms=4, label="probe (analysis, held-out)")
    acc_ax.axhline(
        100 * report["unsplit_accuracy"], color="tab:red", ls="--", lw=1, label="unsplit model"
    )
    acc_ax.set_ylabel("test accuracy (%)", color="tab:red")
    lines = ax.get_legend_handles_labels()
    more = acc_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="lower right")
    s = report["settings"]
    rho = report["correlation"]["cui"]["spearman"]
    ax.set_title(
        f"Validation: {report['model']}, bottleneck ratio {s['ratio']}"
        f"{' + halved' if s['halve'] else ''}, {s['epochs']} epoch"
        f"{'s' if s['epochs'] != 1 else ''} on {s['train_images']} "
        f"images; Spearman(CUI, accuracy) = {'n/a' if rho is None else f'{rho:.2f}'}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    enc = [p["encoded_bytes"] / 1024 for p in report["points"]]
    ax2.plot(vx, enc, "v", color="tab:olive", ms=6, label="encoded by the bottleneck (float32)")
    _cde_axis(ax2, analysis)
    save_figure(fig, path)


def plot_gradcam(s: SampleMaps, title: str, path: str | os.PathLike) -> None:
    """The report's teaser figure (``s``: :func:`isplit.report.maps.gradcam_samples`): one row
    per image, the image then its map at each point."""
    n, k = s.maps.shape[:2]
    cell = 1.45
    fig, axes = plt.subplots(
        n,
        k + 1,
        figsize=(cell * (k + 1) + 1.4, cell * n + 1.2),
        squeeze=False,
        layout="constrained",
    )
    gray = s.images.ndim == 3
    for r in range(n):
        img = s.images[r]
        show = {"cmap": "gray", "vmin": 0, "vmax": 1} if gray else {}
        ax = axes[r, 0]
        ax.imshow(img, interpolation="nearest", **show)
        wrong = s.predictions[r] != s.labels[r]
        ax.set_ylabel(s.labels[r], fontsize=9, rotation=0, ha="right", va="center")
        ax.set_xlabel(
            f"predicted: {s.predictions[r]}" if wrong else "correct",
            fontsize=7,
            color="tab:red" if wrong else "dimgray",
        )
        for c in range(k):
            ax = axes[r, c + 1]
            ax.imshow(img, interpolation="nearest", **show)
            ax.imshow(s.maps[r, c], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            v = s.cui[r, c]
            ax.set_xlabel(
                "map is 0 everywhere" if s.empty[r, c] else f"log10 CUI {log10_cui(v, '.2f')}",
                fontsize=7,
                color="dimgray",
            )
    axes[0, 0].set_title("image", fontsize=9)
    for c, (p, shape) in enumerate(zip(s.points, s.shapes)):
        axes[0, c + 1].set_title(f"{p}\n{'×'.join(map(str, shape[1:]))}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    sm = plt.cm.ScalarMappable(cmap="jet", norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=axes, shrink=min(1.0, 3.0 / n), label="importance (each map scaled to 0–1)")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_classes(analysis: Analysis, report: dict, path: str | Path) -> None:
    """``classes.png``: heat map of log10 CUI, classes x points, each class's best split marked
    (``report``: the contents of ``classes.json``)."""
    from matplotlib.patches import Patch

    from isplit.classes import subset_curve

    present = list(report["per_class"])
    points = report["points"]
    grid = np.stack([np.log10(np.clip(subset_curve(analysis, [c]), 1e-30, None)) for c in present])
    adm = np.array([p.admissible for p in analysis.points])
    scale = grid[:, adm] if adm.any() else grid  # colours span the admissible points
    scale = scale[np.isfinite(scale)] if np.isfinite(scale).any() else np.zeros(1)
    fig, ax = plt.subplots(figsize=(max(8, 0.35 * len(points) + 3), 2.2 + 0.42 * len(present)))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=scale.min(), vmax=scale.max())
    fig.colorbar(im, ax=ax, label="log10 CUI (colour range: admissible points)")
    for col in np.flatnonzero(~adm):
        ax.axvspan(col - 0.5, col + 0.5, color="white", alpha=0.6, lw=0)
    for r, c in enumerate(present):
        best = report["per_class"][c]["best"]
        if best is not None:
            ax.plot(points.index(best), r, marker="*", color="red", ms=12, mec="white")
    if report["global_best"] is not None:
        ax.axvline(points.index(report["global_best"]), color="white", ls="--", lw=1)
    ax.plot([], [], "*", color="red", ms=10, label="best split of the class")
    ax.plot([], [], "--", color="gray", label="global best split")
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Patch(facecolor="lightgray", label="not admissible (faded)"))
    ax.legend(
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(0, 1.01),
        fontsize=8,
        ncol=3,
        frameon=False,
    )
    ax.set_yticks(range(len(present)))
    ax.set_yticklabels([f"{c} ({report['per_class'][c]['images']})" for c in present], fontsize=8)
    ax.set_xticks(range(len(points)))
    ax.set_xticklabels(points, rotation=70, ha="right", fontsize=7)
    ax.set_xlabel("split point (network order)")
    fig.suptitle(
        f"Per-class CUI of {analysis.model} on {analysis.dataset.get('name')} (log10 scale)",
        fontsize=10,
    )
    save_figure(fig, path)


def plot_plan(plan: dict, path: str | Path) -> None:
    """``plan.png``: latency stacked by part over the candidates (all on the server, the points,
    all on the device; Pareto points starred, the recommendation in bold, the latency budget
    dashed) above the score."""
    from isplit.deploy.plan import PARTS

    rows = plan["points"]
    x = np.arange(len(rows))
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(max(7, 0.45 * len(rows) + 3), 6.5), sharex=True,
        gridspec_kw={"height_ratios": [2, 1]},
    )  # fmt: skip
    bottom = np.zeros(len(rows))
    for part, color in zip(PARTS, ("#4c72b0", "#dd8452", "#bbbbbb", "#55a868")):
        values = np.array([r[f"{part}_ms"] for r in rows])
        ax.bar(x, values, bottom=bottom, color=color, label=part)
        bottom += values
    front = [i for i, r in enumerate(rows) if r["pareto"]]
    ax.plot(x[front], bottom[front] * 1.04, "k*", ms=9, label="Pareto front", linestyle="none")
    budget = plan["budgets"]["max_latency_ms"]
    if budget is not None:
        ax.axhline(budget, color="r", ls="--", lw=1, label=f"budget {budget:g} ms")
    ax.set_ylabel("latency per image (ms)")
    link = plan["link"]
    ax.set_title(
        f"{plan['model']}: {8 * link['bandwidth_bytes_per_s'] / 1e6:g} Mbit/s, "
        f"RTT {link['rtt_ms']:g} ms, {'8-bit' if plan['quantize'] else 'float32'} tensor"
    )
    ax.legend(fontsize=8, ncol=3)
    scores = np.array([np.nan if r["score"] is None else r["score"] for r in rows], float)
    ax2.plot(x, scores, "o-", color="#8172b3")
    ax2.plot(x[front], scores[front], "k*", ms=9, linestyle="none")
    if plan["score"] == "cui" and np.nanmin(scores, initial=np.inf) > 0:
        ax2.set_yscale("log")
    for i, r in enumerate(rows):  # not splitting has no value on this scale: it loses nothing
        if r["score"] is None:  # a split not validated: its accuracy was not measured
            what = "not measured" if r.get("not_measured") else "lossless"
            ax2.annotate(what, (x[i], 0.5), xycoords=("data", "axes fraction"), ha="center",
                         rotation=90, fontsize=8, color="#555555")  # fmt: skip
    ax2.set_ylabel(plan.get("score_label", plan["score"]))
    ax2.set_xticks(x, [r["name"] for r in rows], rotation=60, ha="right", fontsize=8)
    for label, r in zip(ax2.get_xticklabels(), rows):
        if r["name"] == plan["recommended"]:
            label.set_fontweight("bold")
            label.set_color("r")
    fig.tight_layout()
    save_figure(fig, path)
