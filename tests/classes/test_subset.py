"""Retraining on a class subset's images at the subset's best and at the global best."""

import json

from isplit.analysis import Analysis
from isplit.cli import main


def test_classes_validate_compares_subset_and_global_best(demo_run, capsys, tmp_path):
    a = Analysis.load(demo_run)
    budget = str(0.5 * a.points[-1].head_flops)
    argv = [
        "classes",
        str(demo_run),
        "--classes",
        "Dress,Shirt",
        "--max-head-flops",
        budget,
        "--out",
        str(tmp_path),
        "--validate",
        "--train-limit",
        "200",
        "--test-limit",
        "100",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--quiet",
    ]
    assert main(argv) == 0
    doc = json.loads((tmp_path / "classes.json").read_text())
    v = doc["validation"]
    assert v["subset_best"] == doc["best"] and v["global_best"] == doc["global_best"]
    for k in ("subset_best_accuracy", "global_best_accuracy"):
        assert 0 <= v[k] <= 1
    assert v["subset_best_wins"] == (v["subset_best_accuracy"] >= v["global_best_accuracy"])
    assert v["settings"]["train_images"] <= 200
    assert "on the subset's images" in capsys.readouterr().out
