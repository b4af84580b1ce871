"""The result of a validation sweep (``validation.json``): per validated point the accuracy
with a trained bottleneck, and how well each predictor ranked and predicted those accuracies
(rank correlations, calibration, regret under budgets); with its persistence and text table."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from isplit import checks
from isplit.analysis import Analysis
from isplit.results import RunResult
from isplit.runfolder import RunFolder
from isplit.texttable import log10_cui
from isplit.validation.picks import measured_picks, picks_line
from isplit.validation.reliability import not_learned, reliability, within_reliable
from isplit.validation.scoring import (
    best_predictor,
    calibrate,
    number,
    pick_of,
    predictor_scores,
    regret_of_pick,
    why_no_best,
    why_no_regret,
)
from isplit.validation.settings import Settings
from isplit.validation.stats import prediction_mae, rank_correlations, regret, spearman_versus

#: Each budget's regret of a simple rule, under ``regret_<label>``: the baseline it follows.
SIMPLE_RULES = (("smallest_bytes", "bytes"), ("deepest", "depth"), ("best_probe", "logistic-probe"))


@dataclass
class ValidationReport(RunResult):
    """``validation.json``: the fields in the order they are written."""

    FILE = RunFolder.VALIDATION
    WHAT = "validation"

    model: str
    analysis: dict  # the analysis validated: its data set's name and settings
    settings: dict  # the sweep's Settings, train_images and test_images
    unsplit_accuracy: float
    reliability: dict  # reliable, reason, not_learned, chance_accuracy, thresholds
    total_flops: float | None
    points: list[dict]  # one row per validated point, in network order
    correlation: dict  # predictor -> Spearman / Kendall with bootstrap intervals
    versus_depth: dict = field(default_factory=dict)  # predictor -> paired difference to depth
    prediction: dict = field(default_factory=dict)  # k, mae: predictor -> isotonic MAE
    calibration: dict = field(default_factory=dict)  # predictor -> linear map to accuracy
    best_predictor: dict = field(default_factory=dict)  # by_spearman, by_loo_mae
    regret: list[dict] = field(default_factory=list)  # one entry per budget
    skipped_points: list[dict] = field(default_factory=list)  # chosen, but too narrow
    picks: dict = field(default_factory=dict)  # the analysis's picks, measured (validation.picks)
    checks: list[dict] = field(default_factory=list)  # the self-checks (isplit.checks), as JSON

    def failed_checks(self) -> list[checks.Check]:
        """The self-checks that failed (each warned on stderr by :func:`checks.warn`)."""
        return checks.failed(checks.from_json(self.checks))

    @property
    def reliable(self) -> bool:
        return bool(self.reliability.get("reliable", True))

    def accuracies(self) -> dict[str, float]:
        """The accuracy with the trained bottleneck at each validated point."""
        return {p["name"]: p["accuracy"] for p in self.points}

    def table(self) -> str:
        """The sweep as text: a row per point, each predictor's statistics, the regrets."""
        rows = [
            f"unsplit accuracy: {self.unsplit_accuracy:.4f}",
            f"{'point':<24}{'log10 CUI':>10}{'bytes':>9}{'encoded':>9}{'accuracy':>10}"
            f"{'drop':>8}{'int8':>8}{'log. probe':>11}",
        ]
        for p in self.points:
            rows.append(
                f"{p['name']:<24}{log10_cui(p['cui']):>10}"
                f"{p['bytes']:>9}{p['encoded_bytes']:>9}{p['accuracy']:>10.4f}"
                f"{p['accuracy_drop']:>8.4f}{_fmt(p['accuracy_int8']):>8}"
                f"{p['probe_accuracy']:>11.4f}" + ("" if p["learned"] else "  did not learn")
            )
        unreliable = "" if self.reliable else " (unreliable)"
        if not self.reliable:
            rows.append(f"NOT RELIABLE: {self.reliability['reason']}")
        for name, c in self.correlation.items():
            cal = self.calibration.get(name, {})
            rows.append(
                f"{name:>14}: Spearman {_fmt(c['spearman'])} {_ci(c['spearman_ci'])}, Kendall "
                f"{_fmt(c['kendall'])} {_ci(c['kendall_ci'])}, prediction MAE "
                f"{_fmt(self.prediction['mae'][name])}, linear leave-one-out MAE "
                f"{_fmt(cal.get('loo_mae'))}" + unreliable
            )
        validated = [p["name"] for p in self.points]
        for r in self.regret:
            others = ", ".join(f"{k} {_fmt(v)}" for k, v in r.get("regret_by", {}).items())
            why = why_no_regret(r, validated)
            rows.append(
                f"regret, {r['budget']}: isplit picks {r['pick']}: "
                + (_fmt(r["regret"]) if why is None else f"n/a ({why})")
                + f"; each predictor's own pick among the validated points: {others}"
                + ("" if r["reliable"] else " (unreliable)")
            )
        best = self.best_predictor or {}
        reason = why_no_best(vars(self))
        if reason is not None:
            rows.append(f"no best predictor here: {reason}")
        elif best.get("by_spearman"):
            by_mae = best.get("by_loo_mae")
            rows.append(
                f"best predictor here: {best['by_spearman']} by Spearman"
                + (f", {by_mae} by the error of its predicted accuracy" if by_mae else "")
            )
        line = picks_line(self.picks)
        if line:
            rows.append(line + unreliable)
        return "\n".join(rows)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _ci(ci: list) -> str:
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


@dataclass
class Measured:
    """What the sweep measured, before scoring: each validated point's result (as written to
    its per-point file), which test images the unsplit model got right, and the chance level."""

    results: list[dict]
    unsplit_correct: torch.Tensor
    chance: float
    train_images: int
    skipped: list[dict]


def build_report(
    analysis: Analysis,
    measured: Measured,
    plan: list[dict],
    settings: Settings,
    model_name: str,
    total_flops: float | None,
) -> ValidationReport:
    """Score every predictor against the accuracies ``measured`` at the validated points."""
    results = measured.results
    unsplit = float(measured.unsplit_correct.float().mean())
    idx = [analysis.point_names.index(r["name"]) for r in results]
    acc = np.array([r["accuracy"] for r in results])
    correct = np.array([[c == "1" for c in r["correct"]] for r in results])
    predictors = predictor_scores(analysis, idx, results)
    points = _point_rows(analysis, results, idx, predictors, unsplit, measured.chance)
    reliable = reliability(points, unsplit, measured.chance)
    boot = {"seed": settings.seed}
    correlation = {
        k: rank_correlations(v, correct, settings.n_boot, **boot) for k, v in predictors.items()
    }
    calibration = calibrate(analysis, predictors, acc, settings)
    regrets = [
        _regret(b, idx, results, predictors, points, reliable, unsplit, measured.chance)
        for b in plan
    ]
    return ValidationReport(
        model=model_name,
        analysis={"dataset": analysis.dataset.get("name"), "settings": analysis.settings},
        settings={
            **settings.to_json(),
            "train_images": measured.train_images,
            "test_images": int(len(measured.unsplit_correct)),
        },
        unsplit_accuracy=unsplit,
        reliability=reliable,
        total_flops=total_flops,
        points=points,
        correlation=correlation,
        # each predictor's Spearman minus depth's, paired over the same bootstrap resamples
        versus_depth=spearman_versus(predictors, "depth", correct, settings.n_boot, **boot),
        prediction={
            "k": settings.k,
            "mae": {k: prediction_mae(v, acc, settings.k, **boot) for k, v in predictors.items()},
        },
        calibration=calibration,
        best_predictor=best_predictor(correlation, calibration, len(points), reliable),
        regret=regrets,
        skipped_points=measured.skipped,
        picks=measured_picks(analysis, {r["name"]: r["accuracy"] for r in results}),
        checks=checks.to_json(_checks(analysis, unsplit, len(measured.unsplit_correct))),
    )


def _checks(analysis: Analysis, unsplit: float, images: int) -> list[checks.Check]:
    """The unsplit model's accuracy on the test images against chance, and against the accuracy
    of the analysis validated (a gap beyond sampling: the analysis was made on another model,
    other data or other preprocessing than this validation)."""
    classes = len(analysis.dataset.get("classes") or [])
    found = [checks.accuracy_vs_chance(unsplit, images, classes)]
    reused = checks.reused_accuracy(
        "validate", analysis.accuracy, analysis.dataset.get("images"), unsplit, images
    )
    return found + ([reused] if reused is not None else [])


def _point_rows(
    analysis: Analysis,
    results: list[dict],
    idx: list[int],
    predictors: dict[str, np.ndarray],
    unsplit: float,
    chance: float,
) -> list[dict]:
    """One row per validated point: its place in the analysis, what the sweep measured there,
    whether its bottleneck learned, and every predictor's score."""
    points = []
    for j, (r, i) in enumerate(zip(results, idx)):
        p = analysis.points[i]
        why = not_learned(r["accuracy"], unsplit, chance)
        points.append(
            {
                "name": r["name"],
                "cui": float(analysis.cui[i]),
                "bytes": p.bytes,
                "head_flops": p.head_flops,
                "halved": r.get("halved"),
                "not_halved": r.get("not_halved"),
                "encoded_shape": r["encoded_shape"],
                "encoded_bytes": r["encoded_bytes"],
                "encoded_bytes_int8": r["encoded_bytes_int8"],
                "accuracy": r["accuracy"],
                "accuracy_drop": unsplit - r["accuracy"],
                "accuracy_int8": r.get("accuracy_int8"),
                "probe_accuracy": r["probe_accuracy"],
                "train_seconds": r["train_seconds"],
                "final_loss": r["losses"][-1] if r["losses"] else None,
                "learned": why is None,
                "not_learned_reason": why,
                "scores": {k: number(v[j]) for k, v in predictors.items()},
            }
        )
    return points


def _regret(
    budget: dict,
    idx: list[int],
    results: list[dict],
    predictors: dict[str, np.ndarray],
    points: list[dict],
    reliable: dict,
    unsplit: float,
    chance: float,
) -> dict:
    """One budget's regret: of isplit's pick, and of every predictor's pick among the validated
    points within it."""
    acc = np.array([r["accuracy"] for r in results])
    names = [r["name"] for r in results]
    within = np.array([budget["within"][i] for i in idx])
    pick = budget["pick"]
    entry = {
        "budget": budget["budget"],
        "kind": budget["kind"],
        "limit": budget["limit"],
        "pick": pick,
        "validated_within": int(within.sum()),
        **regret(acc, within, names.index(pick) if pick in names else None),
        "reliable": within_reliable(reliable, points, within, unsplit, chance),
    }
    # every predictor's pick under the same budget, for comparison
    entry["regret_by"] = {k: regret_of_pick(acc, within, v) for k, v in predictors.items()}
    entry["pick_by"] = {k: pick_of(within, v, names) for k, v in predictors.items()}
    for label, key in SIMPLE_RULES:
        entry[f"regret_{label}"] = entry["regret_by"][key]
    return entry
