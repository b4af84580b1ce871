"""Which predictor picks the best split: one that cannot rank the points (NaN everywhere, flat,
too few held-out images) picks nothing, the best split falls back to CUI's with the reason
recorded; the best split is always a candidate; and no message names a budget not given."""

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from helpers import made_analysis
from isplit import analyze, checks
from isplit.analysis import Analysis
from isplit.analysis.curves import best_point, local_maxima
from isplit.analysis.picks import held_out_images, picks_json, picks_lines, select
from isplit.graph import SplitPoint
from isplit.importance.registry import EVIDENCE_REASON


def _points(n=4, admissible=None):
    admissible = admissible or [True] * n
    return [
        SplitPoint(f"p{i}", "ReLU", (1, 8, 4, 4), 512 - 100 * i, 1e6 * (i + 1), i, True, ok)
        for i, ok in enumerate(admissible)
    ]


def _with_images(a: Analysis, images: int) -> Analysis:
    """``a`` with ``images`` analysed images of its curve (made_analysis has one)."""
    a.per_image = np.tile(a.cui.astype(np.float32), (images, 1))
    a.labels = a.predictions = np.zeros(images, int)
    return a


# -- the check ------------------------------------------------------------------------------


def test_predictor_usable_names_each_way_to_fail():
    nan, ok = float("nan"), [0.2, 0.5, 0.4]
    assert checks.predictor_usable("pca-probe", ok, 200).passed
    assert checks.predictor_usable("taylor", ok).passed  # not scored on held-out images
    few = checks.predictor_usable("pca-probe", ok, 9)
    assert not few.passed and few.values["held_out"] == 9 and few.values["min_held_out"] == 30
    assert "scored on 9 held-out images, fewer than the 30" in few.message
    none = checks.predictor_usable("pca-probe", [nan, nan, 0.9], 200, [True, True, False])
    assert not none.passed and "no finite value at any of the 2 admissible points" in none.message
    flat = checks.predictor_usable("pca-probe", [0.0, 0.0, 0.9], 200, [True, True, False])
    assert not flat.passed and "is 0 at every admissible point (flat)" in flat.message
    assert checks.predictor_usable("pca-probe", [0.3, 0.9], 200, [True, False]).passed  # one point
    assert all(c.message.startswith("pca-probe cannot rank") for c in (few, none, flat))
    json.dumps(checks.to_json([few, none, flat]))  # plain JSON (NaN, numpy values)


def test_the_held_out_images_are_the_probes():
    assert held_out_images(np.arange(3)) == 0
    assert held_out_images(np.arange(64)) < checks.MIN_HELD_OUT <= held_out_images(np.arange(300))


# -- the best split and the candidates ------------------------------------------------------


@pytest.mark.parametrize(
    "curve",
    [[0.1, 0.5, 0.5, 0.5, 0.2], [0.5, 0.5, 0.1, 0.3, 0.3], [0.2, 0.2, 0.2], [0.1, 0.7, 0.7]],
)
def test_the_best_point_of_a_plateau_is_a_candidate(curve):
    mask = [True] * len(curve)
    best = best_point(curve, mask)
    assert best in local_maxima(curve, mask)
    assert (
        select(np.array(curve), {}, "cui", mask, 0).best
        in select(np.array(curve), {}, "cui", mask, 0).candidates
    )


def test_a_plateau_counts_once_at_its_first_point():
    assert local_maxima([0.1, 0.5, 0.5, 0.5, 0.2]) == [1]
    assert local_maxima([0.3, 0.1, 0.4, 0.4], [True, False, True, True]) == [2]


def test_a_usable_selected_predictor_picks():
    cui, probe = np.array([0.1, 0.9, 0.3, 0.2]), np.array([0.5, 0.6, 0.7, 0.6])
    s = select(cui, {"pca-probe": probe}, "pca-probe", [True] * 4, 200)
    assert (s.select_by, s.best, s.candidates) == ("pca-probe", 2, [2])
    assert [c.passed for c in s.checks] == [True]


@pytest.mark.parametrize(
    "probe, held_out, why",
    [
        ([0.5, 0.6, 0.7, 0.6], 9, "scored on 9 held-out images"),
        ([np.nan] * 4, 200, "no finite value"),
        ([0.0] * 4, 200, "flat"),
    ],
)
def test_a_selected_predictor_that_cannot_rank_falls_back_to_cui(probe, held_out, why):
    cui = np.array([0.1, 0.9, 0.3, 0.2])
    s = select(cui, {"pca-probe": np.array(probe)}, "pca-probe", [True] * 4, held_out)
    assert (s.select_by, s.best, s.candidates) == ("cui", 1, [1])
    (c,) = s.checks
    assert not c.passed and c.values["role"] == "select_by" and why in c.message
    run = made_analysis(
        _points(), cui, {"pca-probe": probe}, best="p1", candidates=["p1"],
        select_by=s.select_by, checks=s.checks,
    )  # fmt: skip
    line = run.recommendation()
    assert line.startswith("best split (by CUI: the selected pca-probe ")
    assert why in line.splitlines()[0] and "p1" in line


def test_the_run_records_the_fallback_and_reads_it_back(tmp_path):
    """A real analysis of three images selected by pca-probe: no image is held out, so the best
    split is CUI's, the check is in curves.json, and it survives a reload."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    ).eval()  # fmt: skip
    data = TensorDataset(torch.randn(3, 1, 12, 12), torch.tensor([0, 1, 2]))
    run = analyze(model, data, batch_size=3, select_by="pca-probe")
    assert run.select_by == "cui" and run.best is not None and run.best in run.candidates
    assert run.best == run.points[best_point(run.cui, [p.admissible for p in run.points])].name
    (c,) = [c for c in run.checks if c.name == "predictor_usable"]
    assert not c.passed and c.values["held_out"] == 0
    assert "relax" not in run.recommendation() and "--max-bytes" not in run.recommendation()
    run.save(tmp_path)
    doc = json.loads((tmp_path / "curves.json").read_text())
    assert doc["select_by"] == "cui" and doc["best"] == run.best
    recorded = [d for d in doc["checks"] if d["name"] == "predictor_usable"]
    assert recorded and recorded[0]["passed"] is False and recorded[0]["values"]["held_out"] == 0
    assert "evidence" not in doc["picks"]
    again = Analysis.load(tmp_path)
    assert again.checks == run.checks and again.recommendation() == run.recommendation()


# -- no best split: say what really happened ------------------------------------------------


def test_no_finite_value_is_not_called_a_budget_problem():
    run = made_analysis(_points(), [np.nan] * 4, settings={"max_bytes": None})
    line = run.recommendation()
    assert "no best split: the CUI has no finite value at any of the 4 admissible points" in line
    assert "--max-bytes" not in line and "relax" not in line


def test_no_admissible_point_names_only_the_budgets_given():
    points = _points(admissible=[False] * 4)
    run = made_analysis(points, [0.1, 0.2, 0.3, 0.4], settings={"max_head_flops": 10.0})
    line = run.recommendation()
    assert "--max-head-flops 10.0" in line and "--max-bytes" not in line


# -- the evidence-backed pick ---------------------------------------------------------------


def test_too_few_held_out_images_make_no_evidence_pick_and_say_why():
    cui, probe = [0.1, 0.9, 0.3, 0.2], {"pca-probe": [0.5, 0.6, 1.0, 1.0]}
    few = _with_images(made_analysis(_points(), cui, probe, best="p1"), 64)  # 9 held out
    assert list(few.picks) == ["isplit"]
    assert picks_lines(few) == [
        "no evidence-backed pick: pca-probe was scored on 9 held-out images, fewer than the 30 "
        "it needs to rank the points"
    ]
    assert (
        "evidence" not in picks_json(few) and "9 held-out" in picks_json(few)["evidence_left_out"]
    )
    enough = _with_images(made_analysis(_points(), cui, probe, best="p1"), 300)
    assert list(enough.picks) == ["isplit", "evidence"] and enough.picks["evidence"].point == "p2"


def test_a_recorded_check_decides_over_the_image_count():
    cui, probe = [0.1, 0.9, 0.3, 0.2], [0.5, 0.6, 0.7, 0.6]
    s = select(np.array(cui), {"pca-probe": np.array(probe)}, "cui", [True] * 4, 5)
    run = _with_images(made_analysis(_points(), cui, {"pca-probe": probe}, checks=s.checks), 300)
    assert s.checks[0].values["role"] == "evidence" and list(run.picks) == ["isplit"]


def test_the_reason_says_its_numbers_are_the_demo_networks_not_this_models():
    assert "demo networks" in EVIDENCE_REASON and "not measured on this model" in EVIDENCE_REASON
    assert "docs/experiments.md" in EVIDENCE_REASON


# -- the command line: the two runs -------------------------------------------------


def test_cli_select_by_pca_probe_on_three_images_falls_back_to_cui(capsys, tmp_path):
    from isplit.cli import main

    assert main(["analyze", "--limit", "3", "--select-by", "pca-probe", "--out",
                 str(tmp_path), "--quiet"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    doc = json.loads((tmp_path / "curves.json").read_text())
    assert doc["select_by"] == "cui" and doc["best"] in doc["candidates"]
    assert "best split (by CUI: the selected pca-probe was scored on 0 held-out images" in out
    assert "no admissible split point" not in out and "relax" not in out


def test_cli_with_no_finite_value_says_so_and_names_no_budget(capsys, tmp_path):
    from isplit.cli import main

    assert main(["analyze", "--limit", "4", "--mean", "nan", "--out", str(tmp_path),
                 "--quiet"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert json.loads((tmp_path / "curves.json").read_text())["best"] is None
    assert "no best split: the CUI has no finite value at any of the" in out
    assert "--max-bytes" not in out and "relax" not in out
