"""The CUI curve of a set of classes, from a saved run's per-image curves (no network pass): the
mean of the per-image curves of the images of those classes, which is the image-weighted mean of
the classes' own curves."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from isplit.analysis import Analysis
from isplit.errors import IsplitError, did_you_mean


def class_names(analysis: Analysis) -> list[str]:
    """The data set's classes, in label order."""
    return list(analysis.dataset.get("classes") or analysis.per_class.keys())


def labels_of(analysis: Analysis, subset: Sequence[str]) -> list[int]:
    """The labels of the classes named in ``subset``; an error for an unknown name."""
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
    labels = labels_of(analysis, subset)
    if analysis.per_image.size == 0:
        raise IsplitError("the run has no per-image curves; rerun isplit analyze")
    rows = np.isin(analysis.labels, labels)
    if not rows.any():
        raise IsplitError(f"no analysed image belongs to {', '.join(subset)}: the subset is empty")
    return analysis.per_image[rows].astype(np.float64).mean(0)


def global_curve(analysis: Analysis) -> np.ndarray:
    """The curve the subset's and the classes' curves are compared with: CUI over every analysed
    image (the mean of the per-image curves, as a subset's curve is). It is CUI's even when the
    run selects its best split by another predictor: only CUI has per-image (so per-class)
    curves, and a best by one predictor is no yardstick for bests by another."""
    return analysis.per_image.astype(np.float64).mean(0)


def normalised(curve: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """log10 of the curve at the points of ``mask``, standardised (how alike two shapes are)."""
    v = np.log10(np.clip(curve[mask], 1e-12, None))
    sd = v.std()
    return (v - v.mean()) / (sd if sd > 0 else 1.0)
