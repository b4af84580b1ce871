"""The best split for the classes a user cares about, from a saved run (no network pass).

A subset's curve is the image-weighted mean of its classes' per-image curves, i.e. the mean of
the per-image curves of the images of those classes. Every class also gets its own best split;
classes are ranked by how far they pull the split from the global one, and grouped by how alike
their (normalised) curves are.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist, squareform

from isplit.analysis import Analysis
from isplit.analysis.curves import best_point, local_maxima
from isplit.errors import IsplitError, did_you_mean
from isplit.graph.points import no_admissible_message, restrict


def class_names(analysis: Analysis) -> list[str]:
    return list(analysis.dataset.get("classes") or analysis.per_class.keys())


def _labels_of(analysis: Analysis, subset: Sequence[str]) -> list[int]:
    names = class_names(analysis)
    if not subset:
        raise IsplitError("the class subset is empty: name at least one class with --classes")
    out = []
    for c in subset:
        if c not in names:
            raise IsplitError(
                f"unknown class '{c}'{did_you_mean(c, names)}; the classes are: {', '.join(names)}"
            )
        out.append(names.index(c))
    return out


def subset_curve(analysis: Analysis, subset: Sequence[str]) -> np.ndarray:
    """The CUI curve of the images of the classes in ``subset``."""
    labels = _labels_of(analysis, subset)
    if analysis.per_image.size == 0:
        raise IsplitError("the run has no per-image curves; rerun isplit analyze")
    rows = np.isin(analysis.labels, labels)
    if not rows.any():
        raise IsplitError(f"no analysed image belongs to {', '.join(subset)}: the subset is empty")
    return analysis.per_image[rows].astype(np.float64).mean(0)


def _normalised(curve: np.ndarray, mask: np.ndarray) -> np.ndarray:
    v = np.log10(np.clip(curve[mask], 1e-12, None))
    sd = v.std()
    return (v - v.mean()) / (sd if sd > 0 else 1.0)


def classes_report(analysis: Analysis, subset: Sequence[str] | None = None, **budget) -> dict:
    """classes.json: the subset's curve, candidates and best split against the global best, each
    class's own best split, the classes ranked by how far they pull the split, and groups of
    classes with alike curves. ``budget`` (``max_bytes``, ``max_head_flops``, ``first``,
    ``last``) narrows the admissible points as in ``analyze``."""
    names = class_names(analysis)
    points = analysis.point_names
    narrowed = analysis.points
    if any(v is not None for v in budget.values()):
        narrowed = [copy.copy(p) for p in analysis.points]
        restrict(narrowed, **budget)
    mask = np.array([p.admissible for p in narrowed])
    if not mask.any():
        raise IsplitError(no_admissible_message(narrowed, budget))
    subset = list(names) if subset is None else list(subset)
    curve = subset_curve(analysis, subset)
    global_curve = analysis.per_image.astype(np.float64).mean(0)
    g = best_point(global_curve, mask)
    b = best_point(curve, mask)

    def describe(i: int | None) -> dict | None:
        if i is None:
            return None
        p = analysis.points[i]
        return {
            "name": p.name,
            "shape": list(p.shape),
            "bytes": p.bytes,
            "head_flops": p.head_flops,
        }

    present = [c for i, c in enumerate(names) if (analysis.labels == i).any()]
    per_class = {}
    curves = {}
    for c in present:
        cc = subset_curve(analysis, [c])
        curves[c] = cc
        cb = best_point(cc, mask)
        per_class[c] = {
            "images": int((analysis.labels == names.index(c)).sum()),
            "best": None if cb is None else points[cb],
            "candidates": [points[i] for i in local_maxima(cc, mask)],
            "shift": None if cb is None or g is None else cb - g,
        }
    groups, most_different, distances = [], None, {}
    if len(present) >= 2 and mask.sum() >= 2:
        normed = np.stack([_normalised(curves[c], mask) for c in present])
        dist = squareform(pdist(normed)) / np.sqrt(mask.sum())
        for c, row in zip(present, dist):
            distances[c] = float(row.sum() / (len(present) - 1))
            per_class[c]["mean_distance"] = distances[c]
        i, j = np.unravel_index(np.argmax(dist), dist.shape)
        most_different = {"classes": [present[i], present[j]], "distance": float(dist[i, j])}
        tree = linkage(pdist(normed), method="average")
        n_groups = min(4, len(present))
        ids = fcluster(tree, t=n_groups, criterion="maxclust")
        groups = [[c for c, k in zip(present, ids) if k == gid] for gid in sorted(set(ids))]
    # how far a class pulls the split away: first in points, then by how unlike its curve is
    ranking = sorted(
        present, key=lambda c: (-abs(per_class[c]["shift"] or 0), -distances.get(c, 0.0))
    )
    # the classes whose own best split is not the global one, furthest first
    pulling = [c for c in ranking if per_class[c]["shift"]]
    return {
        "subset": subset,
        "images": int(np.isin(analysis.labels, _labels_of(analysis, subset)).sum()),
        "points": points,
        "cui": [float(v) for v in curve],
        "candidates": [points[i] for i in local_maxima(curve, mask)],
        "best": None if b is None else points[b],
        "global_best": None if g is None else points[g],
        "best_detail": describe(b),
        "global_best_detail": describe(g),
        "shift": None if b is None or g is None else b - g,
        "per_class": per_class,
        "ranking": ranking,
        "pulling": pulling,
        "most_different": most_different,
        "groups": groups,
        "settings": {
            **{k: analysis.settings.get(k) for k in ("target", "reduction", "protocol")},
            **budget,
        },
    }


def plot_classes(analysis: Analysis, report: dict, path: str | Path) -> None:
    """classes.png: heat map of log10 CUI, classes x points, each class's best split marked."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from isplit.io import atomic_write_bytes

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
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
