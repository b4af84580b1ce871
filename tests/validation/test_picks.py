"""validate and the analysis's two picks: both among the default points, their measured accuracy
in validation.json, and the line that says how each did (one when they agree)."""

from types import SimpleNamespace

import pytest

from isplit.validation.picks import measured_picks, picks_line
from isplit.validation.points import default_points


def _analysis(n: int, picks: dict[str, str], candidates=("p3",), best="p3"):
    """A stand-in analysis: ``n`` admissible points p0..p(n-1), bytes falling with depth (the
    last the smallest), and the picks by role -> point."""
    points = [SimpleNamespace(name=f"p{i}", admissible=True, bytes=1000 - i) for i in range(n)]
    roles = {"isplit": "cui", "evidence": "pca-probe"}
    return SimpleNamespace(
        points=points,
        point_names=[p.name for p in points],
        candidates=list(candidates),
        best=best,
        picks={r: SimpleNamespace(predictor=roles[r], point=p) for r, p in picks.items()},
    )


def test_the_default_points_hold_both_picks():
    # p1 is neither a candidate, the best, the smallest nor an evenly spaced fill point
    without = default_points(_analysis(20, {"isplit": "p3"}), [])
    assert "p1" not in without and len(without) == 8
    chosen = default_points(_analysis(20, {"isplit": "p3", "evidence": "p1"}), [])
    assert "p1" in chosen and "p3" in chosen and "p19" in chosen  # the picks, the smallest
    assert len(chosen) == 8 and chosen == sorted(chosen, key=lambda n: int(n[1:]))
    # I-SPLIT's pick too, where the best split follows another predictor (--select-by)
    selected = _analysis(20, {"isplit": "p1", "evidence": "p6"}, candidates=(), best="p6")
    assert {"p1", "p6"} <= set(default_points(selected, []))
    # fewer admissible points than 8: all of them
    assert default_points(_analysis(4, {"isplit": "p1", "evidence": "p2"}), []) == [
        "p0",
        "p1",
        "p2",
        "p3",
    ]


def test_the_picks_measured_and_in_words():
    a = _analysis(5, {"isplit": "p0", "evidence": "p2"})
    block = measured_picks(a, {"p0": 0.8637, "p2": 0.9193, "p4": 0.5})
    assert block == {
        "isplit": {"predictor": "cui", "point": "p0", "accuracy": 0.8637},
        "evidence": {"predictor": "pca-probe", "point": "p2", "accuracy": 0.9193},
        "agree": False,
        "evidence_minus_isplit": pytest.approx(0.0556),
    }
    assert picks_line(block) == (
        "I-SPLIT's pick p0: accuracy 0.8637; evidence-backed pick p2: accuracy 0.9193 (+5.56 pp)"
    )
    # a pick whose point was not validated: no difference
    block = measured_picks(a, {"p2": 0.9})
    assert block["isplit"]["accuracy"] is None and block["evidence_minus_isplit"] is None
    assert picks_line(block) == (
        "I-SPLIT's pick p0: not validated; evidence-backed pick p2: accuracy 0.9000"
    )
    # the same point: one statement
    same = measured_picks(_analysis(5, {"isplit": "p2", "evidence": "p2"}), {"p2": 0.75})
    assert same["agree"] is True and same["evidence_minus_isplit"] == 0
    assert picks_line(same) == (
        "I-SPLIT's pick and the evidence-backed pick agree: p2: accuracy 0.7500"
    )
    # --predictors cui: I-SPLIT's pick alone
    alone = measured_picks(_analysis(5, {"isplit": "p1"}), {"p1": 0.5})
    assert alone == {"isplit": {"predictor": "cui", "point": "p1", "accuracy": 0.5}}
    assert picks_line(alone) == "I-SPLIT's pick p1: accuracy 0.5000"
    # no picks (no admissible finite value), or a validation.json from before picks: no line
    assert measured_picks(_analysis(5, {}), {}) == {}
    assert picks_line({}) is None and picks_line(None) is None
