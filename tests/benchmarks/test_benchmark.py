"""benchmarks/throughput.py: a tiny real run by default, the full configuration when slow."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "throughput.py"
METHODS = {"bare", "isplit", "isplit_pipeline", "naive"}


@pytest.fixture(scope="module")
def throughput():
    spec = importlib.util.spec_from_file_location("throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_reports_every_method_and_beats_naive(throughput, capsys):
    report = throughput.main(
        [
            "--models",
            "resnet18",
            "--size",
            "32",
            "--batch-size",
            "4",
            "--images",
            "8",
            "--naive-images",
            "2",
            "--repeats",
            "2",
        ]
    )
    assert json.loads(capsys.readouterr().out) == report  # one JSON object on stdout
    r = report["models"]["resnet18"]
    assert set(r["images_per_s"]) == METHODS
    assert all(v > 0 for v in r["images_per_s"].values())
    for key in ("ratio_to_bare", "pipeline_ratio_to_bare", "speedup_over_naive"):
        assert r[key] > 0
        lo, hi = r["ratio_range"][key]  # the median of the rounds' paired ratios
        assert lo <= r[key] <= hi
    assert r["points"] > 1 and r["images"] == 8 and r["naive_images"] == 2
    assert r["cui_rel_diff_vs_naive"] < 1e-3  # both compute the same thing
    assert r["nan_points"] == 0
    assert r["speedup_over_naive"] > 1
    assert (
        set(r["targets_met"]) == set(report["targets"]) == {"ratio_to_bare", "speedup_over_naive"}
    )
    assert report["batch_size"] == 4 and report["image_size"] == 32
    assert report["device"] == "cpu" and report["threads"] >= 1 and report["torch"]


def test_points_nan_in_both_are_left_out_of_the_comparison(throughput):
    nan = float("nan")
    naive = torch.tensor([[1.0, nan, 4.0], [2.0, nan, 0.0]], dtype=torch.float64)
    close = naive.clone()
    close[0, 2] = 4.002  # 0.002 / max |naive| 4
    assert throughput.rel_diff(close, naive) == pytest.approx((0.0005, 1))
    one_sided = naive.clone()
    one_sided[1, 0] = nan  # NaN where the naive algorithm has a value: never "the same"
    assert throughput.rel_diff(one_sided, naive)[0] == float("inf")
    assert throughput.rel_diff(naive[:, 1:2], naive[:, 1:2]) == (0.0, 1)


@pytest.mark.slow
def test_full_configuration_meets_the_targets(throughput):
    report = throughput.main([])
    for name, r in report["models"].items():
        assert r["ratio_to_bare"] >= report["targets"]["ratio_to_bare"], name
        assert r["speedup_over_naive"] >= report["targets"]["speedup_over_naive"], name
