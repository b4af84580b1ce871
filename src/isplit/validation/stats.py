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


def _bootstrap_accuracies(correct: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """[1 + n_boot, P]: each point's accuracy on the ``correct`` [P, N] test images, then on
    ``n_boot`` resamples of them (with replacement, seeded): the one resample stream that every
    interval here is computed on, so that intervals of different predictors are paired."""
    rng = np.random.default_rng(seed)
    n = correct.shape[1]
    return np.stack(
        [correct.mean(1)] + [correct[:, rng.integers(0, n, n)].mean(1) for _ in range(n_boot)]
    )


def _interval(values: np.ndarray, level: float) -> list[float | None]:
    """The percentile interval at ``level`` of the finite ``values``."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return [None, None]
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


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
    acc = _bootstrap_accuracies(np.asarray(correct, dtype=np.float64), n_boot, seed)
    spearman, kendall = _rank_corr(predictor, acc[0])
    boots = np.array([_rank_corr(predictor, a) for a in acc[1:]]).reshape(-1, 2)
    return {
        "spearman": None if np.isnan(spearman) else spearman,
        "kendall": None if np.isnan(kendall) else kendall,
        "spearman_ci": _interval(boots[:, 0], level),
        "kendall_ci": _interval(boots[:, 1], level),
    }


def spearman_versus(
    predictors: dict[str, np.ndarray],
    baseline: str,
    correct: np.ndarray,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict]:
    """Each predictor's Spearman correlation with accuracy minus the ``baseline``'s, with a
    paired percentile bootstrap interval: both are computed on the same resamples of the test
    images (:func:`rank_correlations`' resamples with the same ``seed``), so the interval
    says whether the predictor ranks the points better than the baseline, which two overlapping
    marginal intervals cannot say. ``correct`` [P, N] as in :func:`rank_correlations`."""
    if baseline not in predictors:
        return {}
    acc = _bootstrap_accuracies(np.asarray(correct, dtype=np.float64), n_boot, seed)
    ranks = stats.rankdata(acc, axis=1)  # [1 + B, P]: the full data, then the resamples
    ranks -= ranks.mean(1, keepdims=True)
    norm = np.sqrt((ranks**2).sum(1))

    def rho(values: np.ndarray) -> np.ndarray | None:
        values = np.asarray(values, dtype=np.float64)
        if not np.isfinite(values).all() or np.ptp(values) == 0:
            return None
        r = stats.rankdata(values)
        r -= r.mean()
        with np.errstate(invalid="ignore", divide="ignore"):
            return ranks @ r / (norm * np.sqrt((r**2).sum()))

    base = rho(predictors[baseline])
    out = {}
    for name, values in predictors.items():
        mine = rho(values)
        if name == baseline or mine is None or base is None:
            continue
        diff = mine - base
        ci = _interval(diff[1:], level)
        out[name] = {
            "spearman_diff": float(diff[0]) if np.isfinite(diff[0]) else None,
            "ci": ci,
            "above": ci[0] is not None and ci[0] > 0,
        }
    return out


def _k_subsets(p: int, k: int, max_subsets: int, seed: int) -> list[tuple[int, ...]]:
    """The k-subsets of ``p`` points that a prediction is fitted on: all of them, or
    ``max_subsets`` drawn at random (seeded)."""
    subsets = list(itertools.combinations(range(p), k))
    if len(subsets) > max_subsets:
        rng = np.random.default_rng(seed)
        subsets = [subsets[i] for i in rng.choice(len(subsets), max_subsets, replace=False)]
    return subsets


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
    errors = []
    for fit in _k_subsets(p, k, max_subsets, seed):
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


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float, float]:
    """Least-squares line y = a + b x: a, b, the residual standard deviation (n - 2 degrees of
    freedom; 0 with fewer), the mean of x and its sum of squared deviations."""
    mx = float(x.mean())
    sxx = float(((x - mx) ** 2).sum())
    b = float(((x - mx) * (y - y.mean())).sum() / sxx) if sxx > 0 else 0.0
    a = float(y.mean() - b * mx)
    dof = len(x) - 2
    sd = float(np.sqrt(((y - a - b * x) ** 2).sum() / dof)) if dof > 0 else 0.0
    return a, b, sd, mx, sxx


def linear_calibration(
    predictor: np.ndarray,
    accuracy: np.ndarray,
    k: int = 3,
    level: float = 0.95,
    max_subsets: int = 200,
    seed: int = 0,
) -> dict:
    """Map ``predictor`` to accuracy with a least-squares line, and how well that predicts.

    - ``fit``: the line over all points (intercept, slope, residual sd) — what predicts the
      accuracy at points that were not retrained (:func:`predict_accuracy`);
    - ``loo_mae``: leave-one-out: the line fitted on all other points predicts each point;
      ``loo_coverage``: the share of points inside their ``level`` prediction interval
      (Student t, n - 3 degrees of freedom), ``loo_halfwidth`` the mean half-width;
    - ``k_mae``: as :func:`prediction_mae` but with the line: fitted on ``k`` points, predicting
      the others, averaged over the k-subsets.
    """
    x = np.asarray(predictor, dtype=np.float64)
    y = np.asarray(accuracy, dtype=np.float64)
    p = len(x)
    out: dict = {"points": p, "fit": None, "loo_mae": None, "loo_coverage": None}
    out.update({"loo_halfwidth": None, "k_mae": None})
    if p < 3 or not np.isfinite(x).all():
        return out
    a, b, sd, _, _ = _line(x, y)
    out["fit"] = {"intercept": a, "slope": b, "residual_sd": sd}
    if p >= 4:
        errors, inside, half = [], [], []
        t = stats.t.ppf(0.5 + level / 2, p - 3)
        for i in range(p):
            rest = np.arange(p) != i
            ai, bi, si, mx, sxx = _line(x[rest], y[rest])
            pred = ai + bi * x[i]
            se = si * np.sqrt(1 + 1 / (p - 1) + ((x[i] - mx) ** 2 / sxx if sxx > 0 else 0.0))
            errors.append(abs(y[i] - pred))
            half.append(t * se)
            inside.append(errors[-1] <= half[-1])
        out["loo_mae"] = float(np.mean(errors))
        out["loo_coverage"] = float(np.mean(inside))
        out["loo_halfwidth"] = float(np.mean(half))
    if 2 <= k < p:
        errs = []
        for fit in _k_subsets(p, k, max_subsets, seed):
            rest = np.setdiff1d(np.arange(p), fit)
            ai, bi, *_ = _line(x[list(fit)], y[list(fit)])
            errs.append(np.abs(ai + bi * x[rest] - y[rest]).mean())
        out["k_mae"] = float(np.mean(errs))
    return out


def predict_accuracy(
    predictor: np.ndarray, accuracy: np.ndarray, at: np.ndarray, level: float = 0.95
) -> np.ndarray | None:
    """Accuracy predicted at predictor values ``at`` by the line fitted on (``predictor``,
    ``accuracy``), with a ``level`` prediction interval: [len(at), 3] (prediction, low, high),
    clipped to [0, 1]; None with fewer than 3 points."""
    x = np.asarray(predictor, dtype=np.float64)
    y = np.asarray(accuracy, dtype=np.float64)
    at = np.asarray(at, dtype=np.float64)
    if len(x) < 3 or not np.isfinite(x).all():
        return None
    a, b, sd, mx, sxx = _line(x, y)
    t = stats.t.ppf(0.5 + level / 2, len(x) - 2)
    lever = (at - mx) ** 2 / sxx if sxx > 0 else np.zeros_like(at)
    half = t * sd * np.sqrt(1 + 1 / len(x) + lever)
    pred = a + b * at
    return np.clip(np.stack([pred, pred - half, pred + half], 1), 0.0, 1.0)


def loo_linear(
    features: np.ndarray, accuracy: np.ndarray, ridge: float = 1e-3
) -> np.ndarray | None:
    """Leave-one-out predictions of a small linear model of accuracy on ``features`` [P, F]
    (standardised on the fitting points, intercept, ridge ``ridge`` against singular fits): each
    point's accuracy predicted by the model fitted on all the others. None with fewer than
    F + 3 points."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(accuracy, dtype=np.float64)
    p, f = x.shape
    if p < f + 3 or not np.isfinite(x).all():
        return None
    out = np.empty(p)
    for i in range(p):
        rest = np.arange(p) != i
        mean, std = x[rest].mean(0), x[rest].std(0)
        std = np.where(std > 0, std, 1.0)
        z = (x[rest] - mean) / std
        w = np.linalg.solve(z.T @ z + ridge * len(z) * np.eye(f), z.T @ (y[rest] - y[rest].mean()))
        out[i] = y[rest].mean() + ((x[i] - mean) / std) @ w
    return out
