"""Scoring the predictors of post-split accuracy over the validated points: each predictor's
score at every point (those the analysis computed, then the baselines: output bytes, depth and
the logistic probe), combinations of cheap signals fitted leave-one-out, the calibration of
each predictor to an absolute accuracy, each predictor's pick under a budget, and the best
predictor."""

from __future__ import annotations

import numpy as np

from isplit.analysis import Analysis
from isplit.validation.settings import Settings
from isplit.validation.stats import linear_calibration, loo_linear, predict_accuracy, regret

#: Combinations of cheap signals, fitted here: a linear model of accuracy on these features
#: (log10 CUI, log2 output bytes, depth, the analysis probe), leave-one-out over the validated
#: points, whose prediction for each point is that point's score.
COMBINATIONS = {
    "combo": ("cui", "bytes", "depth"),
    "combo-probe": ("cui", "bytes", "depth", "probe"),
}
#: Predictors whose value is itself an accuracy (their raw error as a prediction is reported).
ACCURACY_VALUED = ("probe", "logistic-probe")


def number(v) -> float | None:
    """``v`` as a JSON number, None where it is not finite."""
    v = float(v)
    return v if np.isfinite(v) else None


def predictor_scores(
    analysis: Analysis, idx: list[int], results: list[dict]
) -> dict[str, np.ndarray]:
    """Every predictor's score at the validated points ``idx`` (higher: more accuracy
    expected): those the analysis computed, then the baselines, then the combinations."""
    out = {
        name: np.asarray(analysis.curve(name), dtype=float)[idx]
        for name in analysis.predictor_names
    }
    out["bytes"] = -np.array([analysis.points[i].bytes for i in idx], dtype=float)
    out["depth"] = np.array(idx, dtype=float)
    out["logistic-probe"] = np.array([r["probe_accuracy"] for r in results])
    out.update(combinations(out, np.array([r["accuracy"] for r in results])))
    return out


def _everywhere(analysis: Analysis, name: str) -> np.ndarray | None:
    """A predictor's score at every analysed point, where it has one without retraining."""
    if name in analysis.predictor_names:
        return np.asarray(analysis.curve(name), dtype=float)
    if name == "bytes":
        return -np.array([p.bytes for p in analysis.points], dtype=float)
    if name == "depth":
        return np.arange(len(analysis.points), dtype=float)
    return None


def _feature(name: str, score: np.ndarray) -> np.ndarray:
    """The scale on which a predictor relates linearly to accuracy, if anywhere: log10 for CUI
    (it spans orders of magnitude), minus log2 for the output bytes, the score itself else."""
    score = np.asarray(score, dtype=float)
    if name == "cui":
        return np.log10(np.maximum(score, 1e-30))
    if name == "bytes":
        return -np.log2(-score)
    return score


def combinations(scores: dict[str, np.ndarray], acc: np.ndarray) -> dict[str, np.ndarray]:
    """The leave-one-out predictions of each combination whose parts were all scored."""
    out = {}
    for name, parts in COMBINATIONS.items():
        if all(p in scores and np.isfinite(scores[p]).all() for p in parts):
            features = np.stack([_feature(p, scores[p]) for p in parts], 1)
            predicted = loo_linear(features, acc)
            if predicted is not None:
                out[name] = predicted
    return out


def calibrate(analysis: Analysis, scores: dict, acc: np.ndarray, settings: Settings) -> dict:
    """Each predictor mapped to post-split accuracy (a line on its :func:`_feature`) and the
    error of that absolute prediction; the predicted accuracy with a 95 % interval at every
    admissible analysed point where the predictor has a value; and, for predictors that are
    accuracies themselves, the error of taking them as the prediction unchanged."""
    adm = [i for i, p in enumerate(analysis.points) if p.admissible]
    out = {}
    for name, score in scores.items():
        if name in COMBINATIONS:  # already a prediction of accuracy, leave-one-out
            out[name] = {"points": len(acc), "loo_mae": float(np.abs(score - acc).mean())}
            continue
        x = _feature(name, score)
        entry = linear_calibration(x, acc, settings.k, seed=settings.seed)
        values = _everywhere(analysis, name)
        predicted = (
            None if values is None else predict_accuracy(x, acc, _feature(name, values[adm]))
        )
        if predicted is not None:
            entry["predicted"] = {
                analysis.points[i].name: [float(v) for v in row] for i, row in zip(adm, predicted)
            }
        if name in ACCURACY_VALUED:
            entry["raw_mae"] = float(np.abs(acc - score).mean())
            entry["raw_bias"] = float((acc - score).mean())
        out[name] = entry
    return out


#: Fewer validated points than this cannot rank predictors: with 4 points not even a perfect rank
#: correlation is told from chance at the 5 % level (2 of the 24 orders are as extreme).
MIN_RANK_POINTS = 5


def why_no_ranking(points: int, reliability: dict | None, top_spearman: float | None) -> str | None:
    """Why the validated points cannot name a best predictor, or None when they can: the
    statistics are not reliable (``validation.json``'s ``reliability``), there are fewer than
    :data:`MIN_RANK_POINTS` points (``points``), or no predictor's Spearman correlation with the
    accuracy (``top_spearman``: the highest) is above 0."""
    if (reliability or {}).get("reliable") is False:
        return (
            "the statistics are not reliable (bottlenecks that did not learn, or an unsplit "
            "model at chance)"
        )
    if points < MIN_RANK_POINTS:
        return (
            f"{points} validated point(s) cannot rank predictors (it takes {MIN_RANK_POINTS}: "
            "with fewer, not even a perfect rank correlation is told from chance); validate "
            "more points (--points)"
        )
    if top_spearman is None or not top_spearman > 0:
        return "no predictor's rank correlation with the accuracy is above 0"
    return None


def best_predictor(
    correlation: dict, calibration: dict, points: int, reliability: dict | None = None
) -> dict:
    """The predictor with the highest Spearman correlation, and the one with the lowest
    leave-one-out error of its predicted accuracy, over the ``points`` validated points; both
    None, with the ``reason``, where the points cannot rank predictors (:func:`why_no_ranking`)."""
    rho = {k: c["spearman"] for k, c in correlation.items() if c["spearman"] is not None}
    mae = {k: c["loo_mae"] for k, c in calibration.items() if c.get("loo_mae") is not None}
    top = max(rho, key=rho.get) if rho else None
    reason = why_no_ranking(points, reliability, rho.get(top))
    if reason is not None:
        return {"by_spearman": None, "by_loo_mae": None, "reason": reason}
    return {
        "by_spearman": top,
        "by_loo_mae": min(mae, key=mae.get) if mae else None,
        "reason": None,
    }


def why_no_best(doc: dict) -> str | None:
    """Why a validation (``validation.json`` as a dict) names no best predictor, or None when it
    names one: its ``best_predictor``'s ``reason``, or, in a file written before it had one, the
    same judgement made again from its points, ``reliability`` and correlations."""
    best = doc.get("best_predictor") or {}
    if "reason" in best:
        return best["reason"]
    rho = [c.get("spearman") for c in (doc.get("correlation") or {}).values()]
    rho = [r for r in rho if r is not None]
    return why_no_ranking(
        len(doc.get("points") or []), doc.get("reliability"), max(rho, default=None)
    )


def why_no_regret(entry: dict, validated: list[str]) -> str | None:
    """Why a budget's regret of isplit's pick (``entry``: one of ``validation.json``'s
    ``regret``) is unknown, or None when it is known: no pick within the budget, no validated
    point within it, or a pick that was not among the ``validated`` points (the predictors'
    own picks are then still made among the validated points, and have a regret)."""
    if entry.get("regret") is not None:
        return None
    if not entry.get("pick"):
        return "no pick within the budget"
    if entry.get("validated_within") == 0:
        return "no validated point within the budget"
    if entry["pick"] not in validated:
        return "its pick was not validated"
    return "no validated point within the budget"


def _top(within: np.ndarray, score: np.ndarray) -> int | None:
    """The validated point within the budget that ``score`` ranks highest, if any."""
    ok = within & np.isfinite(score)
    return int(np.flatnonzero(ok)[np.argmax(score[ok])]) if ok.any() else None


def pick_of(within: np.ndarray, score: np.ndarray, names: list[str]) -> str | None:
    """The name of the point ``score`` ranks highest among the validated points within."""
    top = _top(within, score)
    return None if top is None else names[top]


def regret_of_pick(acc: np.ndarray, within: np.ndarray, score: np.ndarray) -> float | None:
    """The regret of the point ``score`` ranks highest among the validated points within."""
    top = _top(within, score)
    return None if top is None else regret(acc, within, top)["regret"]
