"""Where the plan's score comes from: the validated accuracy where the run has it, else the
predictor the run selects by, else CUI itself (not log10 CUI); the output says which."""

import json
import shutil

import pytest

from isplit.analysis import Analysis
from isplit.cli import main
from isplit.deploy.plan import Link, make_plan

LINK = Link(1e6, 0.015)
SPEEDS = {"device_speed": 2e9, "server_speed": 5e10}


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    """The demo analysed with the probe predictor and selecting its best split by it."""
    run = tmp_path_factory.mktemp("scores") / "run"
    argv = ["analyze", "--limit", "256", "--predictors", "probe", "--select-by", "probe",
            "--out", str(run), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    return run


def _admissible(a: Analysis, curve) -> dict[str, float]:
    return {p.name: float(v) for p, v in zip(a.points, curve) if p.admissible}


def test_without_validation_the_score_is_the_predictor_the_run_selects_by(probe_run):
    a = Analysis.load(probe_run)
    assert a.select_by == "probe"
    plan = make_plan(probe_run, LINK, **SPEEDS)
    probe = _admissible(a, a.curve("probe"))
    assert plan.score == "probe" and plan.score_label == "probe"
    assert "the best this run has: no validation.json" in plan.score_source
    splits = plan.points[1:-1]
    assert [r["name"] for r in splits] == list(probe)
    assert [r["score"] for r in splits] == pytest.approx(list(probe.values()))
    assert plan.table().splitlines()[2].split()[-1] == "probe"  # the score column's header
    # Under a budget that only the splits meet, the best probe accuracy wins.
    fast = Link(1e9, 0.0)
    limit = plan.points[-1]["total_ms"] * 0.99 / 1e3  # below all on the device
    small = plan.points[0]["bytes"] - 1  # below all on the server
    plan = make_plan(probe_run, fast, max_latency=limit, max_bytes=small, **SPEEDS)
    within = [r for r in plan.points if r["within_budget"]]
    assert len(within) > 1 and plan.recommended == max(within, key=lambda r: r["score"])["name"]


def test_score_cui_is_cui_itself_not_its_log(probe_run, capsys):
    a = Analysis.load(probe_run)
    plan = make_plan(probe_run, LINK, score="cui", **SPEEDS)
    cui = _admissible(a, a.cui)
    assert plan.score == "cui" and plan.score_label == "CUI" and "as asked" in plan.score_source
    assert [r["score"] for r in plan.points[1:-1]] == pytest.approx(list(cui.values()))
    assert all(0 < v < 1 for v in cui.values())  # CUI, not log10 CUI (negative here)
    row = next(line for line in plan.table().splitlines() if line.startswith(a.best))
    assert f"{cui[a.best]:.4g}" in row


def _validation(run, a: Analysis, names: list[str]) -> dict:
    """A validation.json as `isplit validate` writes it, with made-up accuracies."""
    points = [{"name": n, "accuracy": 0.5 + i / 100, "accuracy_int8": 0.4 + i / 100}
              for i, n in enumerate(names)]  # fmt: skip
    doc = {"format": 1, "model": a.model, "unsplit_accuracy": 0.93, "points": points}
    (run / "validation.json").write_text(json.dumps(doc))
    return {p["name"]: p for p in points}


def test_a_validated_run_is_scored_by_its_validated_accuracy(probe_run, tmp_path, cli_error):
    run = shutil.copytree(probe_run, tmp_path / "run")
    assert "--score validated needs a validated run" in cli_error(
        "plan", str(run), "--bandwidth", "1MB/s", "--rtt", "15ms", "--score", "validated"
    )
    a = Analysis.load(run)
    names = [p.name for p in a.points if p.admissible][1::3]
    validated = _validation(run, a, names)
    for quantize, key in ((True, "accuracy_int8"), (False, "accuracy")):
        plan = make_plan(run, LINK, quantize=quantize, **SPEEDS)
        assert plan.score == "validated" and plan.score_label == "accuracy"
        assert plan.score_source.startswith("validated accuracy (the best this run has")
        assert f"{len(names)} validated point(s)" in plan.score_source
        server, *splits, device = plan.points
        scored = [r for r in splits if r["score"] is not None]
        assert [r["name"] for r in scored] == names
        assert [r["score"] for r in scored] == [validated[n][key] for n in names]
        # the points not validated are kept, their accuracy not measured
        assert [r["name"] for r in splits] == [p.name for p in a.points if p.admissible]
        assert all(r.get("not_measured") for r in splits if r["name"] not in names)
        assert server["score"] == device["score"] == 0.93  # not splitting: the unsplit network
    err = cli_error("plan", str(run), "--bandwidth", "1MB/s", "--rtt", "15ms", "--score", "acc")
    assert "--score 'acc' is not a score: use one of best, validated, cui, probe" in err
    # Asked for, the predictor is still there.
    assert make_plan(run, LINK, score="probe", **SPEEDS).score == "probe"
