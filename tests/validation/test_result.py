"""validate scores every predictor of the analysis: calibration to an absolute accuracy with an
interval, leave-one-out combinations of cheap signals, regret of each predictor's pick; the
report's persistence; the experiment scripts that turn sweeps into the tables of
docs/experiments.md."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from isplit.analysis import analyze
from isplit.models import load_model
from isplit.report import write_report
from isplit.runfolder import FORMAT
from isplit.validation import Settings, ValidationReport, validate


def test_validate_scores_every_predictor_of_the_analysis(tmp_path):
    loaded = load_model("demo-vgg16")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 1, 32, 32, generator=g)
    with torch.no_grad():
        y = loaded.model(x).argmax(1)
    data = TensorDataset(x, y)
    analysis = analyze(
        loaded.model,
        data,
        model_name="demo-vgg16",
        batch_size=100,
        predictors="probe,taylor,cam-share",
    )
    points = [
        "features.2",
        "features.6",
        "features.13",
        "features.16",
        "features.23",
        "features.33",
        "features.42",
    ]
    settings = Settings(epochs=1, train_limit=160, test_limit=80, n_boot=20, batch_size=80)
    analysis.save(tmp_path)
    report = validate(
        loaded.model, analysis, data, data, tmp_path, points=points, settings=settings
    )
    names = ["cui", "probe", "taylor", "cam-share", "bytes", "depth", "logistic-probe", "combo"]
    names += ["combo-probe"]
    assert list(report.correlation) == names
    assert list(report.prediction["mae"]) == names
    acc = np.array([p["accuracy"] for p in report.points])
    adm = [p.name for p in analysis.points if p.admissible]
    for name in names:
        cal = report.calibration[name]
        assert cal["loo_mae"] is not None, name
        if name in ("probe", "taylor", "cam-share", "cui", "bytes", "depth"):
            assert list(cal["predicted"]) == adm  # an absolute prediction at every admissible point
            assert all(lo <= v <= hi for v, lo, hi in cal["predicted"].values())
    assert report.calibration["probe"]["raw_mae"] == pytest.approx(
        np.mean([abs(p["accuracy"] - p["scores"]["probe"]) for p in report.points])
    )
    for r in report.regret:
        within = np.array([p["name"] in _within(analysis, r) for p in report.points])
        for name in names:
            score = np.array([p["scores"][name] for p in report.points], dtype=float)
            if not within.any():
                assert r["regret_by"][name] is None
                continue
            i = np.flatnonzero(within)[np.argmax(score[within])]
            assert r["regret_by"][name] == pytest.approx(acc[within].max() - acc[i])
            assert r["pick_by"][name] == report.points[i]["name"]
        assert r["regret_best_probe"] == r["regret_by"]["logistic-probe"]
    best = report.best_predictor["by_spearman"]
    assert best in names
    assert report.correlation[best]["spearman"] == max(
        c["spearman"] for c in report.correlation.values() if c["spearman"] is not None
    )
    versus = report.versus_depth
    assert "depth" not in versus and set(versus) <= set(names)
    for name, d in versus.items():
        rho = report.correlation[name]["spearman"] - report.correlation["depth"]["spearman"]
        assert d["spearman_diff"] == pytest.approx(rho) and d["above"] == (d["ci"][0] > 0)
    written = ValidationReport.load(tmp_path)  # what validate wrote, read back
    assert written.to_json() == json.loads(json.dumps(report.to_json()))
    assert written.to_json()["format"] == FORMAT
    assert ValidationReport.load(tmp_path / "validation.json") == written
    table = report.table().splitlines()
    assert table[0] == f"unsplit accuracy: {report.unsplit_accuracy:.4f}"
    assert [line.split()[0] for line in table[2 : 2 + len(points)]] == points
    assert table[-1].startswith(f"best predictor here: {best} by Spearman")
    page = (write_report(tmp_path, samples=0)).read_text()
    assert "the best predictor of post-split accuracy was" in page
    if best != "depth" and best in versus:
        assert "against depth on the same test images" in page
    assert "<th>probe</th><th>taylor</th><th>cam-share</th>" in page  # the point table
    assert "regret: combo-probe" in page and "Predicted accuracy at every admissible" in page

    tables = _tables_module()
    summary = tables.main([str(tmp_path), "--json", str(tmp_path / "summary.json")])
    assert list(summary[tmp_path.name]["predictors"]) == names
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written == json.loads(json.dumps(summary))
    for name in names:
        row = summary[tmp_path.name]["predictors"][name]
        assert row["max_regret"] == pytest.approx(
            max(r["regret_by"][name] for r in report.regret if r["regret_by"][name] is not None)
        )


def _tables_module():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "predictor_tables.py"
    spec = importlib.util.spec_from_file_location("predictor_tables", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _doc(probe_ci, depth_ci, probe_regrets):
    corr = {"spearman": 0.5, "kendall": 0.4, "kendall_ci": [0.1, 0.6]}
    return {
        "model": "m",
        "settings": {"ratio": 8, "halve": False, "epochs": 4, "train_images": 8, "test_images": 5},
        "unsplit_accuracy": 0.9,
        "points": [],
        "correlation": {
            "probe": {**corr, "spearman_ci": probe_ci},
            "depth": {**corr, "spearman_ci": depth_ci},
        },
        "prediction": {"k": 3, "mae": {"probe": 0.01, "depth": 0.02}},
        "calibration": {},
        "regret": [
            {"budget": f"b{i}", "regret_by": {"probe": r, "depth": 0.0}}
            for i, r in enumerate(probe_regrets)
        ],
    }


def test_tables_judge_the_goals_of_the_issue():
    tables = _tables_module()
    above = tables.summarise(_doc([0.81, 0.95], [0.5, 0.8], [0.0, 0.01]))["probe"]
    assert above["interval_above_depth"] is True and above["regret_within_goal"] is True
    overlap = tables.summarise(_doc([0.79, 0.95], [0.5, 0.8], [0.0, 0.0101]))["probe"]
    assert overlap["interval_above_depth"] is False and overlap["regret_within_goal"] is False
    assert overlap["max_regret"] == 0.0101
    md = tables.overview(
        {"r": tables.summarise(_doc([0.81, 0.95], [0.5, 0.8], [0.0]))},
        {"r": _doc([0, 0], [0, 0], [])},
    )
    assert "| probe | 0.50 [0.81, 0.95] ▲✓ | 1 | 1 |" in md


@pytest.mark.slow
def test_quick_sweep_script_end_to_end(tmp_path):
    """benchmarks/predictors_sweep.sh in its QUICK mode on the demo VGG: analysis, both
    bottleneck strengths, tables."""
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "QUICK": "1",
        "NETS": "demo-vgg16",
        "DEVICE": "cpu",
        "ISPLIT": f"{sys.executable} -m isplit",
        "PYTHON": sys.executable,
        "PYTHONPATH": str(root / "src"),
    }
    subprocess.run(
        ["bash", str(root / "benchmarks" / "predictors_sweep.sh"), str(tmp_path)],
        env=env,
        check=True,
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"demo-vgg16-c8", "demo-vgg16-c16h"}
    assert "| probe |" in (tmp_path / "tables.md").read_text()


def _within(analysis, budget):
    attr = "head_flops" if budget["kind"] == "flops" else "bytes"
    return {p.name for p in analysis.points if getattr(p, attr) <= budget["limit"]}
