"""Streaming CUI accumulators, and the selection of candidate and best split points.

The accumulator holds per-class sums and counts (float64) and the per-image rows. Every curve is a
mean, so accumulators computed over disjoint shards (processes, resumed runs) merge exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.signal import find_peaks


class CurveAccumulator:
    """Sums and counts of per-image CUI curves, per class, plus the per-image rows."""

    def __init__(self, num_points: int, num_classes: int) -> None:
        self.sums = np.zeros((num_classes, num_points), dtype=np.float64)
        self.counts = np.zeros(num_classes, dtype=np.int64)
        self._rows: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._preds: list[np.ndarray] = []
        self._index: list[np.ndarray] = []

    @property
    def images(self) -> int:
        return int(self.counts.sum())

    def add(
        self,
        cui: np.ndarray,
        labels: np.ndarray,
        preds: np.ndarray,
        index: np.ndarray | None = None,
    ) -> None:
        """Add per-image curves ``cui`` [N, K] of images with ``labels`` and predictions.

        ``index`` gives each image's position in the data set (default: in arrival order).
        """
        cui = np.asarray(cui, dtype=np.float32)
        labels = np.asarray(labels, dtype=np.int64)
        np.add.at(self.sums, labels, cui.astype(np.float64))
        self.counts += np.bincount(labels, minlength=len(self.counts))
        if index is None:
            start = sum(len(i) for i in self._index)
            index = np.arange(start, start + len(labels))
        self._rows.append(cui)
        self._labels.append(labels)
        self._preds.append(np.asarray(preds, dtype=np.int64))
        self._index.append(np.asarray(index, dtype=np.int64))

    def merge(self, other: CurveAccumulator) -> CurveAccumulator:
        """Add another shard's sums, counts and rows to this one (in place)."""
        if self.sums.shape != other.sums.shape:
            raise ValueError("accumulators of different shapes cannot merge")
        self.sums += other.sums
        self.counts += other.counts
        for mine, theirs in (
            (self._rows, other._rows),
            (self._labels, other._labels),
            (self._preds, other._preds),
            (self._index, other._index),
        ):
            mine.extend(theirs)
        return self

    def arrays(self) -> dict[str, np.ndarray]:
        """Per-image arrays, sorted by data set index: cui [N, K], labels, predictions, index."""
        k = self.sums.shape[1]
        if not self._rows:
            return {
                "cui": np.zeros((0, k), np.float32),
                "labels": np.zeros(0, np.int64),
                "predictions": np.zeros(0, np.int64),
                "index": np.zeros(0, np.int64),
            }
        index = np.concatenate(self._index)
        order = np.argsort(index, kind="stable")
        return {
            "cui": np.concatenate(self._rows)[order],
            "labels": np.concatenate(self._labels)[order],
            "predictions": np.concatenate(self._preds)[order],
            "index": index[order],
        }

    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to rebuild the accumulator (for checkpoints and shard exchange)."""
        return {"sums": self.sums, "counts": self.counts, **self.arrays()}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> CurveAccumulator:
        acc = cls(state["sums"].shape[1], state["sums"].shape[0])
        acc.sums = np.array(state["sums"], dtype=np.float64)
        acc.counts = np.array(state["counts"], dtype=np.int64)
        if len(state["labels"]):
            acc._rows = [np.asarray(state["cui"], np.float32)]
            acc._labels = [np.asarray(state["labels"], np.int64)]
            acc._preds = [np.asarray(state["predictions"], np.int64)]
            acc._index = [np.asarray(state["index"], np.int64)]
        return acc

    def global_curve(self) -> np.ndarray:
        total = self.counts.sum()
        if total == 0:
            return np.full(self.sums.shape[1], np.nan)
        return self.sums.sum(0) / total

    def class_curves(self) -> np.ndarray:
        """[classes, K]; NaN for classes without images."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums / self.counts[:, None]


def local_maxima(curve: Sequence[float], mask: Sequence[bool] | None = None) -> list[int]:
    """Indices of the local maxima of ``curve`` over the points where ``mask`` is true.

    The masked points are taken in order as one curve; an end point counts when it is higher than
    its one neighbour; a plateau counts once, at its first point, as :func:`best_point` picks the
    first of equal maxima: the best point is always one of the local maxima.
    """
    curve = np.asarray(curve, dtype=np.float64)
    idx = np.flatnonzero(np.ones(len(curve), bool) if mask is None else np.asarray(mask, bool))
    values = curve[idx]
    values = np.where(np.isfinite(values), values, -np.inf)
    if len(values) == 0:
        return []
    if len(values) == 1:
        return [int(idx[0])]
    padded = np.concatenate([[-np.inf], values, [-np.inf]])
    peaks, found = find_peaks(padded, plateau_size=1)
    return [int(idx[p - 1]) for p in found["left_edges"] if np.isfinite(padded[p])]


def best_point(curve: Sequence[float], mask: Sequence[bool]) -> int | None:
    """Index of the global maximum of ``curve`` over the points where ``mask`` is true."""
    curve = np.asarray(curve, dtype=np.float64)
    idx = np.flatnonzero(np.asarray(mask, bool) & np.isfinite(curve))
    if len(idx) == 0:
        return None
    return int(idx[np.argmax(curve[idx])])


def flat_curve_warning(curve: Sequence[float], admissible: Sequence[bool]) -> str | None:
    """What to tell a user whose curve carries no information at the admissible points (every
    CUI 0, or some not finite), with the likely cause; None for a usable curve."""
    values = np.asarray([c for c, ok in zip(curve, admissible) if ok], dtype=np.float64)
    if values.size == 0:
        return None
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        return (
            f"the CUI is not finite at {bad} of {values.size} admissible points: the model's "
            "outputs or gradients overflowed, or the images hold NaN / inf; check the input "
            "normalisation, and try --precision fp32"
        )
    if (values == 0).all():
        return (
            "the CUI is 0 at every admissible point: the class score does not depend on the "
            "activations there (a zero-initialised classifier, as torchvision's vision "
            "transformers have with --weights none, or activations all cut off by a ReLU); the "
            "best split printed is arbitrary: analyse a trained network"
        )
    return None
