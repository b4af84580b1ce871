"""A validation names a best predictor only where its points can rank predictors (reliable, at
least MIN_RANK_POINTS points, a Spearman above 0), else says why; a regret that is n/a says why
beside the predictors' own regrets (issue 27, item 6)."""

from isplit.validation import ValidationReport
from isplit.validation.scoring import MIN_RANK_POINTS, best_predictor, why_no_best

RELIABLE = {"reliable": True, "reason": None}
UNRELIABLE = {"reliable": False, "reason": "the bottleneck did not learn at 2 of 5 point(s)"}


def _corr(spearman):
    return {"spearman": spearman, "spearman_ci": [-1.0, 1.0], "kendall": 0, "kendall_ci": [0, 0]}


def test_a_best_predictor_needs_reliable_statistics_enough_points_and_a_positive_rank():
    correlation = {"cui": _corr(-0.5), "depth": _corr(0.9), "bytes": _corr(None)}
    calibration = {"cui": {"loo_mae": 0.01}, "depth": {"loo_mae": 0.02}}
    assert MIN_RANK_POINTS == 5
    named = best_predictor(correlation, calibration, 5, RELIABLE)
    assert named == {"by_spearman": "depth", "by_loo_mae": "cui", "reason": None}
    few = best_predictor(correlation, calibration, 3, RELIABLE)
    assert few["by_spearman"] is None and few["by_loo_mae"] is None
    assert few["reason"].startswith("3 validated point(s) cannot rank predictors")
    unreliable = best_predictor(correlation, calibration, 8, UNRELIABLE)
    assert unreliable["by_spearman"] is None and "not reliable" in unreliable["reason"]
    negative = best_predictor({"cui": _corr(-0.5)}, calibration, 6, RELIABLE)
    assert negative["by_spearman"] is None and "above 0" in negative["reason"]


def _report(n: int, reliability: dict, best: dict, regret: list) -> ValidationReport:
    points = [
        {
            "name": f"p{i}",
            "cui": None if i == 1 else 10.0 ** -(n - i),  # p1: an unknown CUI
            "bytes": 4096,
            "encoded_bytes": 512,
            "accuracy": 0.5 + 0.05 * i,
            "accuracy_drop": 0.4 - 0.05 * i,
            "accuracy_int8": None,
            "probe_accuracy": 0.4,
            "learned": True,
        }
        for i in range(n)
    ]
    correlation = {"cui": _corr(-0.5), "depth": _corr(1.0)}
    return ValidationReport(
        model="m",
        analysis={},
        settings={},
        unsplit_accuracy=0.9,
        reliability=reliability,
        total_flops=None,
        points=points,
        correlation=correlation,
        prediction={"k": 3, "mae": {"cui": None, "depth": None}},
        best_predictor=best,
        regret=regret,
    )


def test_the_command_line_names_no_best_predictor_from_three_points():
    """The issue's case: "best predictor here" from 3 points, Spearman -0.5 [-1, 1]; a file
    written before best_predictor said why is judged the same way when read."""
    regret = {"budget": "any", "pick": "p9", "regret": None, "best_accuracy": 0.6}
    regret.update(validated_within=3, reliable=True, regret_by={"cui": 0.004, "depth": 0.0})
    for best in (
        best_predictor(_report(3, RELIABLE, {}, []).correlation, {}, 3, RELIABLE),
        {"by_spearman": "depth", "by_loo_mae": None},  # as written before
    ):
        report = _report(3, RELIABLE, best, [regret])
        table = report.table()
        assert "best predictor here:" not in table.replace("no best predictor here:", "")
        assert "no best predictor here: 3 validated point(s) cannot rank predictors" in table
        assert why_no_best(report.to_json()).startswith("3 validated point(s)")
        line = next(x for x in table.splitlines() if x.startswith("regret, any"))
        assert line == (
            "regret, any: isplit picks p9: n/a (its pick was not validated); each predictor's "
            "own pick among the validated points: cui 0.004, depth 0.000"
        )
        assert table.splitlines()[3].split()[1] == "n/a"  # p1's unknown CUI, not -inf
    five = _report(5, RELIABLE, {"by_spearman": "depth", "by_loo_mae": None, "reason": None}, [])
    assert five.table().splitlines()[-1] == "best predictor here: depth by Spearman"
    unreliable = _report(5, UNRELIABLE, {"by_spearman": "depth", "by_loo_mae": None}, [])
    assert "no best predictor here: the statistics are not reliable" in unreliable.table()
