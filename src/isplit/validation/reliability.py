"""Whether a validation's statistics can be trusted: a bottleneck that did not learn (its
accuracy near chance, or far below the unsplit model's) says more about too little training
than about the split."""

from __future__ import annotations

import numpy as np

#: A bottleneck did not learn when its accuracy is within this of chance (absolute) ...
CHANCE_MARGIN = 0.05
#: ... or when it keeps less than this share of the unsplit model's margin over chance.
MIN_KEPT_MARGIN = 0.5


def chance_accuracy(labels: np.ndarray) -> float:
    """The accuracy of always answering the most frequent test class (1 / classes when the
    classes are balanced): what a classifier that learned nothing reaches."""
    labels = np.asarray(labels)
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else float("nan")


def not_learned(accuracy: float, unsplit: float, chance: float) -> str | None:
    """Why the bottleneck at a point did not learn, or None when it did: its accuracy is within
    ``CHANCE_MARGIN`` of chance, or it keeps less than ``MIN_KEPT_MARGIN`` of the unsplit
    model's margin over chance (e.g. below 0.50 with chance 0.10 and the unsplit model at
    0.90). Such a point's accuracy says more about too little training than about the split."""
    if accuracy <= chance + CHANCE_MARGIN:
        return f"accuracy {accuracy:.3f} is within {CHANCE_MARGIN:.2f} of chance ({chance:.3f})"
    if unsplit > chance and accuracy - chance < MIN_KEPT_MARGIN * (unsplit - chance):
        return (
            f"accuracy {accuracy:.3f} keeps less than {MIN_KEPT_MARGIN:.0%} of the unsplit "
            f"model's margin over chance ({unsplit:.3f} vs chance {chance:.3f})"
        )
    return None


def reliability(points: list[dict], unsplit: float, chance: float) -> dict:
    """Whether the correlations, predictions and regrets rest on bottlenecks that learned
    (``points``: the report's rows, each with ``name`` and ``learned``)."""
    failed = [p["name"] for p in points if not p["learned"]]
    reason = None
    if unsplit <= chance + CHANCE_MARGIN:
        reason = (
            f"the unsplit model itself is at chance on these images (accuracy {unsplit:.3f}, "
            f"chance {chance:.3f}): no split can be told from another; fit the model to the data "
            "first (`isplit train`)"
        )
    elif failed:
        reason = (
            f"the bottleneck did not learn at {len(failed)} of {len(points)} point(s) "
            f"({', '.join(failed)}): their accuracies reflect too little training rather than "
            "the split; train longer (--epochs, --train-limit) before trusting the statistics"
        )
    return {
        "reliable": reason is None,
        "reason": reason,
        "not_learned": failed,
        "chance_accuracy": chance,
        "thresholds": {"chance_margin": CHANCE_MARGIN, "min_kept_margin": MIN_KEPT_MARGIN},
    }


def within_reliable(
    reliable: dict, points: list[dict], within: np.ndarray, unsplit: float, chance: float
) -> bool:
    """Whether a budget's regret can be trusted: the statistics as a whole can, or the validated
    points within the budget all learned (and the unsplit model did)."""
    return bool(
        reliable["reason"] is None
        or (
            unsplit > chance + CHANCE_MARGIN
            and within.any()
            and all(points[j]["learned"] for j in np.flatnonzero(within))
        )
    )
