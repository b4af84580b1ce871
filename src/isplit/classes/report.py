"""The best split for the classes a user cares about, from a saved run (no network pass):
``classes.json``.

A subset's curve is the image-weighted mean of its classes' per-image curves, i.e. the mean of
the per-image curves of the images of those classes. Every class also gets its own best split;
classes are ranked by how far they pull the split from the run's best split, and grouped by how
alike their (normalised) curves are.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist, squareform

from isplit.analysis import Analysis
from isplit.analysis.curves import best_point, local_maxima
from isplit.classes.curves import class_names, global_curve, labels_of, normalised, subset_curve
from isplit.errors import IsplitError
from isplit.graph.points import no_admissible_message, restrict
from isplit.results import RunResult
from isplit.runfolder import RunFolder
from isplit.texttable import text_table


@dataclass
class ClassesReport(RunResult):
    """``classes.json``: the fields in the order they are written."""

    FILE = RunFolder.CLASSES
    WHAT = "classes"
    OPTIONAL = ("validation",)

    subset: list[str]  # the classes asked about (every class when none were named)
    images: int  # analysed images of those classes
    points: list[str]  # every analysed point, in network order
    cui: list[float]  # the subset's curve
    candidates: list[str]  # its local maxima over the admissible points
    best: str | None  # its maximum
    global_best: str | None  # the CUI maximum over all analysed images, in the budget
    best_detail: dict | None  # name, shape, bytes, head_flops
    global_best_detail: dict | None
    shift: int | None  # points from the global best to the subset's best
    per_class: dict  # class -> images, best, candidates, shift (, mean_distance)
    ranking: list[str]  # classes by how far they pull the split, then how unlike their curve
    pulling: list[str]  # the classes whose own best is not the global one, furthest first
    most_different: dict | None  # the two least alike curves and their distance
    groups: list[list[str]]  # classes with alike curves
    settings: dict  # the run's target, reduction, protocol, select_by; the budget
    validation: dict | None = None  # retrained on the subset only (validate_subset)

    def table(self) -> str:
        """The report as text: each class's best split, the classes that pull the split, the
        groups, the subset's best against the global one (and the retrained accuracies)."""
        header = ["class", "best split", "images", "shift", "candidates"]
        cells = [
            [
                c,
                v["best"] or "n/a",
                str(v["images"]),
                _signed(v["shift"]),
                ", ".join(v["candidates"]),
            ]
            for c, v in self.per_class.items()
        ]
        rows = [text_table(header, cells, left=2)]
        rows.append("classes pulling the split furthest: " + _first(self.pulling, PULLING_SHOWN))
        if self.most_different:
            a, b = self.most_different["classes"]
            rows.append(f"most different curves: {a} and {b}")
        rows.append("groups of alike curves: " + "; ".join(", ".join(g) for g in self.groups))
        everything = set(self.subset) >= set(self.per_class)
        label = "all classes" if everything else ", ".join(self.subset)
        rows.append(
            f"subset ({label}; {self.images} images): best split {self.best}, "
            f"global best {self.global_best} (shift "
            f"{_signed(self.shift)} points); candidates: {', '.join(self.candidates)}"
        )
        if note := _compared(self.settings):
            rows.append(note)
        if self.validation is not None:
            v = self.validation
            rows.append(
                f"on the subset's images: accuracy at the subset's best {v['subset_best']}: "
                f"{v['subset_best_accuracy']:.4f}, at the global best {v['global_best']}: "
                f"{v['global_best_accuracy']:.4f}"
            )
        return "\n".join(rows)


def _compared(settings: dict) -> str:
    """For a run that selects by another predictor than CUI: that every best split here is
    CUI's (the other predictor has no per-class curves), and the run's own best."""
    by = settings.get("select_by") or "cui"
    if by == "cui":
        return ""
    return (
        "every best split above is a CUI maximum (per-class curves exist for CUI only); the "
        f"run's best split by {by} is {settings.get('selected_best')}"
    )


def _signed(v: int | None) -> str:
    return "n/a" if v is None else f"{v:+d}"


#: The classes that pull the split furthest named on the command line (classes.json: all).
PULLING_SHOWN = 3


def _first(pulling: list[str], n: int) -> str:
    """The first ``n`` pulling classes, and how many more there are (all in classes.json)."""
    if not pulling:
        return "none (every class's best split is the global one)"
    more = len(pulling) - n
    shown = ", ".join(pulling[:n])
    return shown if more <= 0 else f"{shown}, ... ({more} more; all {len(pulling)} in classes.json)"


def classes_report(
    analysis: Analysis,
    subset: Sequence[str] | None = None,
    *,
    out: str | os.PathLike | None = None,
    **budget,
) -> ClassesReport:
    """The subset's curve, candidates and best split against the run's best split, each
    class's own best split, the classes ranked by how far they pull the split, and groups of
    classes with alike curves; written to ``out`` (``classes.json``; ``isplit classes`` draws
    ``classes.png`` beside it) when given. ``budget`` (``max_bytes``, ``max_head_flops``,
    ``first``, ``last``) narrows the admissible points as in ``analyze``; the run's best split
    is then its best within them."""
    mask = _admissible(analysis, budget)
    subset = class_names(analysis) if subset is None else list(subset)
    points = analysis.point_names
    curve = subset_curve(analysis, subset)
    g = best_point(global_curve(analysis), mask)
    b = best_point(curve, mask)
    per_class, curves = _per_class(analysis, mask, g)
    present = list(per_class)
    groups, most_different = _likeness(present, curves, mask, per_class)
    # how far a class pulls the split away: first in points, then by how unlike its curve is
    ranking = sorted(
        present,
        key=lambda c: (-abs(per_class[c]["shift"] or 0), -per_class[c].get("mean_distance", 0.0)),
    )
    report = ClassesReport(
        subset=subset,
        images=int(np.isin(analysis.labels, labels_of(analysis, subset)).sum()),
        points=points,
        cui=[float(v) for v in curve],
        candidates=[points[i] for i in local_maxima(curve, mask)],
        best=None if b is None else points[b],
        global_best=None if g is None else points[g],
        best_detail=_describe(analysis, b),
        global_best_detail=_describe(analysis, g),
        shift=None if b is None or g is None else b - g,
        per_class=per_class,
        ranking=ranking,
        # the classes whose own best split is not the global one, furthest first
        pulling=[c for c in ranking if per_class[c]["shift"]],
        most_different=most_different,
        groups=groups,
        settings={
            **{k: analysis.settings.get(k) for k in ("target", "reduction", "protocol")},
            "select_by": analysis.select_by,
            "compared_by": "cui",
            **(
                {}
                if analysis.select_by == "cui"
                else {"selected_best": _name(analysis, best_point(analysis.selection, mask))}
            ),
            **budget,
        },
    )
    if out is not None:
        report.save(out)
    return report


def _admissible(analysis: Analysis, budget: dict) -> np.ndarray:
    """The admissible points of the run, narrowed by ``budget``; an error when none is left."""
    narrowed = analysis.points
    if any(v is not None for v in budget.values()):
        narrowed = [copy.copy(p) for p in analysis.points]
        restrict(narrowed, **budget)
    mask = np.array([p.admissible for p in narrowed])
    if not mask.any():
        raise IsplitError(no_admissible_message(narrowed, budget))
    return mask


def _name(analysis: Analysis, i: int | None) -> str | None:
    return None if i is None else analysis.point_names[i]


def _describe(analysis: Analysis, i: int | None) -> dict | None:
    if i is None:
        return None
    p = analysis.points[i]
    return {"name": p.name, "shape": list(p.shape), "bytes": p.bytes, "head_flops": p.head_flops}


def _per_class(
    analysis: Analysis, mask: np.ndarray, g: int | None
) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Each class with analysed images: its own best split, candidates and shift from the
    global best ``g``; and its curve."""
    names, points = class_names(analysis), analysis.point_names
    per_class, curves = {}, {}
    for i, c in enumerate(names):
        if not (analysis.labels == i).any():
            continue
        curves[c] = cc = subset_curve(analysis, [c])
        cb = best_point(cc, mask)
        per_class[c] = {
            "images": int((analysis.labels == i).sum()),
            "best": None if cb is None else points[cb],
            "candidates": [points[j] for j in local_maxima(cc, mask)],
            "shift": None if cb is None or g is None else cb - g,
        }
    return per_class, curves


def _likeness(
    present: list[str], curves: dict[str, np.ndarray], mask: np.ndarray, per_class: dict
) -> tuple[list[list[str]], dict | None]:
    """Groups of classes with alike (normalised) curves and the least alike pair; each class's
    mean distance to the others goes into ``per_class``."""
    if len(present) < 2 or mask.sum() < 2:
        return [], None
    normed = np.stack([normalised(curves[c], mask) for c in present])
    dist = squareform(pdist(normed)) / np.sqrt(mask.sum())
    for c, row in zip(present, dist):
        per_class[c]["mean_distance"] = float(row.sum() / (len(present) - 1))
    i, j = np.unravel_index(np.argmax(dist), dist.shape)
    most_different = {"classes": [present[i], present[j]], "distance": float(dist[i, j])}
    tree = linkage(pdist(normed), method="average")
    ids = fcluster(tree, t=min(4, len(present)), criterion="maxclust")
    groups = [[c for c, k in zip(present, ids) if k == gid] for gid in sorted(set(ids))]
    return groups, most_different
