"""Does a cheap signal predict post-split accuracy? Rank correlations with bootstrap intervals,
monotone prediction from a few retrained points, and the regret of a choice under a budget."""

from __future__ import annotations

import itertools

import numpy as np
from scipy import stats
from sklearn.isotonic import IsotonicRegression


def _rank_corr(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    return float(stats.spearmanr(x, y).statistic), float(stats.kendalltau(x, y).statistic)


def rank_correlations(
    predictor: np.ndarray,
    correct: np.ndarray,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Spearman and Kendall correlation of ``predictor`` [P] with accuracy, where ``correct``
    [P, N] says which of N test images each of P points classified right; each with a
    percentile bootstrap interval over the test images (resampled with replacement)."""
    predictor = np.asarray(predictor, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    spearman, kendall = _rank_corr(predictor, correct.mean(1))
    rng = np.random.default_rng(seed)
    n = correct.shape[1]
    boots = np.array(
        [_rank_corr(predictor, correct[:, rng.integers(0, n, n)].mean(1)) for _ in range(n_boot)]
    )
    tail = (1 - level) / 2 * 100

    def interval(col: int) -> list[float | None]:
        vals = boots[:, col][np.isfinite(boots[:, col])]
        if len(vals) == 0:
            return [None, None]
        return [float(np.percentile(vals, tail)), float(np.percentile(vals, 100 - tail))]

    return {
        "spearman": None if np.isnan(spearman) else spearman,
        "kendall": None if np.isnan(kendall) else kendall,
        "spearman_ci": interval(0),
        "kendall_ci": interval(1),
    }


def prediction_mae(
    predictor: np.ndarray, accuracy: np.ndarray, k: int = 3, max_subsets: int = 200, seed: int = 0
) -> float | None:
    """Fit a monotone (isotonic, increasing) map predictor -> accuracy on ``k`` retrained points,
    predict the others; the mean absolute error, averaged over the k-subsets of the points
    (all of them, or ``max_subsets`` drawn at random)."""
    x = np.asarray(predictor, dtype=np.float64)
    y = np.asarray(accuracy, dtype=np.float64)
    p = len(x)
    if p <= k or k < 1:
        return None
    subsets = list(itertools.combinations(range(p), k))
    if len(subsets) > max_subsets:
        rng = np.random.default_rng(seed)
        subsets = [subsets[i] for i in rng.choice(len(subsets), max_subsets, replace=False)]
    errors = []
    for fit in subsets:
        rest = np.setdiff1d(np.arange(p), fit)
        model = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(
            x[list(fit)], y[list(fit)]
        )
        errors.append(np.abs(model.predict(x[rest]) - y[rest]).mean())
    return float(np.mean(errors))


def regret(accuracy: np.ndarray, within: np.ndarray, choice: int | None) -> dict:
    """The best accuracy among the points ``within`` a budget against the accuracy of ``choice``."""
    accuracy = np.asarray(accuracy, dtype=np.float64)
    within = np.asarray(within, dtype=bool)
    if not within.any() or choice is None:
        return {"best_accuracy": None, "chosen_accuracy": None, "regret": None}
    best = float(accuracy[within].max())
    chosen = float(accuracy[choice])
    return {"best_accuracy": best, "chosen_accuracy": chosen, "regret": best - chosen}
