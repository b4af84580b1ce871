"""The two picks of an analysis: I-SPLIT's (CUI maximum) and the evidence-backed one (pca-probe
maximum), over the admissible points, in the result, curves.json and words; old runs too."""

import json

import numpy as np
import pytest

from helpers import made_analysis
from isplit.analysis import Analysis
from isplit.analysis.picks import picks_lines
from isplit.graph import SplitPoint
from isplit.importance.registry import DEFAULT_PREDICTORS, EVIDENCE_PREDICTOR, EVIDENCE_REASON


def _analysis(cui, predictors: dict, admissible=(True, True, True, True)) -> Analysis:
    points = [
        SplitPoint(f"p{i}", "ReLU", (1, 8, 4, 4), 512 - 100 * i, 1e6 * (i + 1), i, True, ok)
        for i, ok in enumerate(admissible)
    ]
    run = made_analysis(points, cui, predictors, total_flops=1e7)
    # 300 analysed images: enough held out for pca-probe to rank the points (test_selection.py)
    run.per_image = np.tile(run.cui.astype(np.float32), (300, 1))
    run.labels = run.predictions = np.zeros(300, int)
    return run


def test_the_default_is_cui_and_the_evidence_predictor():
    assert DEFAULT_PREDICTORS == ("cui", EVIDENCE_PREDICTOR) == ("cui", "pca-probe")


def test_two_picks_each_the_maximum_over_the_admissible_points():
    run = _analysis(
        [0.1, 0.9, 0.3, 0.2],
        {"pca-probe": [0.5, 0.6, 0.7, 0.99]},
        admissible=(True, True, True, False),  # p3 has the highest pca-probe, but is not admissible
    )
    found = run.picks
    assert list(found) == ["isplit", "evidence"]
    assert (found["isplit"].point, found["isplit"].value) == ("p1", pytest.approx(0.9))
    assert (found["evidence"].point, found["evidence"].value) == ("p2", pytest.approx(0.7))
    assert found["evidence"].head_flops == 3e6 and found["evidence"].head_flop_share == 0.3
    assert found["evidence"].bytes == 312
    lines = picks_lines(run)
    assert lines[0].startswith("I-SPLIT's pick (the CUI maximum, the paper's method): p1 (cui 0.9;")
    assert lines[1].startswith("evidence-backed pick (the pca-probe maximum): p2 (pca-probe 0.7;")
    assert "head 3.0 MFLOPs = 30%" in lines[1]
    assert lines[2] == f"why the evidence-backed pick: {EVIDENCE_REASON}" and len(lines) == 3


def test_picks_that_agree_take_one_line():
    run = _analysis([0.1, 0.9, 0.3, 0.2], {"pca-probe": [0.5, 0.8, 0.7, 0.6]})
    lines = picks_lines(run)
    assert len(lines) == 2
    assert lines[0].startswith("I-SPLIT's pick and the evidence-backed pick agree: p1 (cui 0.9, ")
    assert run.to_json()["picks"]["agree"] is True


def test_cui_alone_has_only_isplits_pick_and_says_nothing_more():
    run = _analysis([0.1, 0.9, 0.3, 0.2], {})
    assert list(run.picks) == ["isplit"]
    assert run.picks_text() == ""
    doc = run.to_json()["picks"]
    assert list(doc) == ["isplit"] and doc["isplit"]["point"] == "p1"


def test_select_by_does_not_move_isplits_pick():
    run = _analysis([0.1, 0.9, 0.3, 0.2], {"pca-probe": [0.5, 0.6, 0.7, 0.6]})
    run.select_by, run.best = "pca-probe", "p2"
    assert run.picks["isplit"].point == "p1"


def test_curves_json_records_both_picks_and_the_reason(tmp_path):
    run = _analysis([0.1, 0.9, 0.3, 0.2], {"pca-probe": [0.5, 0.6, 0.7, 0.6]})
    run.save(tmp_path)
    doc = json.loads((tmp_path / "curves.json").read_text())["picks"]
    assert doc["isplit"] == {
        "predictor": "cui",
        "point": "p1",
        "value": pytest.approx(0.9),
        "head_flops": 2e6,
        "head_flop_share": 0.2,
        "bytes": 412,
    }
    assert doc["evidence"]["point"] == "p2" and doc["evidence"]["predictor"] == "pca-probe"
    assert doc["agree"] is False and doc["reason"] == EVIDENCE_REASON
    assert Analysis.load(tmp_path).picks == run.picks


def test_a_run_folder_from_before_the_picks_loads_with_them(tmp_path):
    _analysis([0.1, 0.9, 0.3, 0.2], {"pca-probe": [0.5, 0.6, 0.7, 0.6]}).save(tmp_path)
    path = tmp_path / "curves.json"
    doc = json.loads(path.read_text())
    del doc["picks"]
    path.write_text(json.dumps(doc))
    assert Analysis.load(tmp_path).picks["evidence"].point == "p2"
    for p in doc["points"]:  # and one from before pca-probe was computed by default
        del p["pca-probe"]
    doc["predictors"] = ["cui"]
    path.write_text(json.dumps(doc))
    assert list(Analysis.load(tmp_path).picks) == ["isplit"]
