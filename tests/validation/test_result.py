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
    # one epoch on 160 images: no bottleneck learns, so no best predictor is named (issue 27)
    assert not report.reliable
    assert report.best_predictor == {
        "by_spearman": None,
        "by_loo_mae": None,
        "reason": report.best_predictor["reason"],
    }
    assert report.best_predictor["reason"].startswith("the statistics are not reliable")
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
    assert table[-2] == f"no best predictor here: {report.best_predictor['reason']}"
    pick = analysis.picks["isplit"].point  # no pca-probe here: I-SPLIT's pick alone
    measured = report.accuracies().get(pick)
    assert report.picks == {"isplit": {"predictor": "cui", "point": pick, "accuracy": measured}}
    said = "not validated" if measured is None else f"accuracy {measured:.4f}"
    assert table[-1].removesuffix(" (unreliable)") == f"I-SPLIT's pick {pick}: {said}"
    page = (write_report(tmp_path, samples=0)).read_text()
    assert "the best predictor of post-split accuracy was" not in page
    assert "no best predictor of post-split accuracy: the statistics are not reliable" in page
    assert "<th>probe</th><th>taylor</th><th>cam-share</th>" in page  # the point table
    assert "regret: combo-probe" in page
    assert "Predicted accuracy at every admissible" not in page  # it would name the best

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


#: seed -> accuracy at each point of a fake sweep (20 test images); seeds 1 and 2 at three points
SEEDED = {
    0: {"p0": 0.50, "p1": 0.60, "p2": 0.70, "p3": 0.80, "p4": 0.85, "p5": 0.90},
    1: {"p0": 0.55, "p2": 0.65, "p5": 0.90},
    2: {"p0": 0.45, "p2": 0.75, "p5": 0.95},
}


def _seed_sweep(root: Path, seed: int) -> None:
    """A fake sweep ``m-c8`` (seed 0) or its seed run ``m-c8-seed<k>``: validation.json and
    the per-point files with which of the 20 test images each point got right."""
    folder = root / ("m-c8" if seed == 0 else f"m-c8-seed{seed}")
    (folder / "validation_points").mkdir(parents=True)
    doc = _doc([0.2, 0.9], [0.3, 0.95], [0.0])
    doc["settings"].update(test_images=20, seed=0, n_boot=200, bottleneck_seed=seed)
    doc["regret"][0]["validated_within"] = len(SEEDED[seed])
    doc["points"] = [
        {"name": n, "bytes": 100, "accuracy": a, "scores": {"probe": -i, "depth": i}}
        for i, (n, a) in enumerate(SEEDED[seed].items())
    ]
    for n, a in SEEDED[seed].items():
        right = round(20 * a)  # a different subset of images per seed, as a seed would give
        correct = "".join("1" if (i + 7 * seed) % 20 < right else "0" for i in range(20))
        (folder / "validation_points" / f"{n}.json").write_text(json.dumps({"correct": correct}))
    (folder / "validation.json").write_text(json.dumps(doc))


def test_tables_add_the_seed_noise_where_seed_runs_exist(tmp_path, capsys):
    tables = _tables_module()
    for seed in SEEDED:
        _seed_sweep(tmp_path, seed)
    result = tables.main([str(tmp_path), "--json", str(tmp_path / "summary.json")])
    md = capsys.readouterr().out
    assert list(result) == ["m-c8"]  # the seed runs are not sweeps of their own
    assert "m-c8-seed1" not in md.split("#### Training noise")[0]
    noise = result["m-c8"]["seeds"]
    assert noise["seeds"] == [0, 1, 2] and list(noise["points"]) == ["p0", "p2", "p5"]
    p0 = noise["points"]["p0"]
    assert p0["accuracy"] == [0.5, 0.55, 0.45] and p0["range"] == pytest.approx(0.1)
    assert p0["sd"] == pytest.approx(0.05)
    assert noise["pooled_sd"] == pytest.approx(np.sqrt((0.05**2 * 2 + 0.05**2 / 3) / 3))
    assert noise["between_points"]["sd"] == pytest.approx(np.std(list(SEEDED[0].values()), ddof=1))
    assert "| p0 | 50.00 % | 55.00 % | 45.00 % | 50.00 % | 10.00 pp | 5.00 pp |" in md
    assert "| between all 6 points (seed 0) | | | | | 40.00 pp | 15.41 pp |" in md
    # depth ranks the seeded points right at every seed; the interval widens with the seeds
    depth, probe = noise["spearman"]["depth"], noise["spearman"]["probe"]
    assert depth["seed0"] == depth["seed_mean"] == 1.0 and probe["seed0"] == -1.0
    assert depth["ci_images"][1] == 1.0 and depth["ci_images_and_seeds"][1] == 1.0
    assert depth["ci_images_and_seeds"][0] < depth["ci_images"][0] <= 1.0
    assert "Training noise: the bottleneck's seed moves a point's accuracy by a pooled sd of " in md
    assert "4.41 pp" in md and "0.29 times the spread between points" in md
    assert json.loads((tmp_path / "summary.json").read_text())["m-c8"]["seeds"] == noise
    # a seed run on other test images is not paired with the sweep: left out
    other = tmp_path / "m-c8-seed2" / "validation.json"
    doc = json.loads(other.read_text())
    doc["settings"]["test_images"] = 19
    other.write_text(json.dumps(doc))
    assert tables.main([str(tmp_path)])["m-c8"]["seeds"]["seeds"] == [0, 1]
    assert "m-c8-seed2 is not paired" in capsys.readouterr().err
    # a sweep without seed runs: the tables as before
    for seed in (1, 2):
        for f in (tmp_path / f"m-c8-seed{seed}").rglob("*.json"):
            f.unlink()
    assert "seeds" not in tables.main([str(tmp_path)])["m-c8"]
    assert "Training noise" not in capsys.readouterr().out


QUICK_VGG16 = ["features.6", "features.23", "features.42"]


@pytest.mark.slow
def test_quick_sweep_script_end_to_end(tmp_path):
    """benchmarks/predictors_sweep.sh in its QUICK mode on the demo VGG: analysis, both
    bottleneck strengths, two more bottleneck seeds at the (three) points, tables."""
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
    md = (tmp_path / "tables.md").read_text()
    assert "| probe |" in md and md.count("#### Training noise: bottleneck seeds 0, 1, 2") == 2
    assert list(summary["demo-vgg16-c8"]["seeds"]["points"]) == QUICK_VGG16


def _within(analysis, budget):
    attr = "head_flops" if budget["kind"] == "flops" else "bytes"
    return {p.name for p in analysis.points if getattr(p, attr) <= budget["limit"]}
