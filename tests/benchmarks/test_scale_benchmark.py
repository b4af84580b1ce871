"""benchmarks/scale.py: tiny real runs of its CPU part and of its GPU part (on the CPU)."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scale.py"


@pytest.fixture(scope="module")
def scale():
    spec = importlib.util.spec_from_file_location("scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_scaling_and_memory(scale, capsys, tmp_path):
    out = tmp_path / "scale.json"
    argv = ["--images", "96", "--memory-images", "32", "--batch-size", "16", "--json-out", str(out)]
    report = scale.main(argv)
    assert json.loads(capsys.readouterr().out) == report == json.loads(out.read_text())
    assert report["errors"] == {}
    s = report["cpu_scaling"]
    assert set(s["images_per_s"]) == {"1", "2"} and all(v > 0 for v in s["images_per_s"].values())
    assert s["scaling_efficiency"] == pytest.approx(s["speedup"] / 2, abs=1e-3)
    m = report["memory"]
    assert [r["images"] for r in m["runs"]] == [32, 320]
    assert all(r["peak_rss_mb"] > 0 for r in m["runs"])
    assert m["extra_per_image_curves_mb"] >= 0


def test_gpu_part_runs_on_the_cpu_and_survives_a_failure(scale, capsys):
    report = scale.main(
        [
            "--gpu",
            "--device",
            "cpu",
            "--models",
            "resnet18",
            "no_such_model",
            "--images",
            "24",
            "--size",
            "32",
            "--batch-size",
            "8",
            "--repeats",
            "1",
            "--folder-images",
            "20",
        ]
    )
    capsys.readouterr()
    assert list(report["errors"]) == ["no_such_model.build"]  # the others went on
    r = report["gpu"]["models"]["resnet18"]
    for precision in ("fp32", "bf16"):
        p = r[precision]
        assert p["bare_images_per_s"] > 0
        for key in ("engine", "analyze"):
            assert p[f"{key}_images_per_s"] > 0 and p[f"{key}_ratio_to_bare"] > 0
        assert 0 <= p["data_wait_share"] <= 1
        folder = p["folder"]  # the command line over a JPEG folder
        assert folder["images"] == 20 and f"--precision {precision}" in folder["command"]
        assert folder["end_to_end_ratio_to_bare"] > 0 and folder["setup_seconds"] >= 0
    loader = report["gpu"]["folder_loader"]
    assert loader["uint8"]["bytes_per_image"] * 4 == loader["float32"]["bytes_per_image"]
    cmp = r["bf16_vs_fp32"]
    assert 0 < cmp["cui_median_rel_err"] < 0.05 and isinstance(cmp["best_changed"], bool)
    assert report["gpu"]["cuda_matches_cpu"]["ok"]  # here: the CPU against itself
    assert report["gpu"]["models"]["no_such_model"] == {}
    assert set(report["gpu"]["summary"]) == {
        "resnet18 fp32",
        "resnet18 bf16",
        "resnet18 fp32 JPEG folder, command line",
        "resnet18 bf16 JPEG folder, command line",
        "resnet18 bf16 vs fp32",
    }


def test_profile_script_names_the_costly_operators(capsys, tmp_path):
    spec = importlib.util.spec_from_file_location(
        "profile_analyze", SCRIPT.with_name("profile_analyze.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--device", "cpu", "--model", "resnet18", "--size", "32", "--images", "16"]
    doc = module.main([*argv, "--batch-size", "8", "--top", "5", "--out", str(tmp_path)])
    assert json.loads(capsys.readouterr().out) == doc
    assert doc["timing"]["images"] == 16 and 0 <= doc["timing"]["data_wait_share"] <= 1
    ops = [row["op"] for row in doc["top_self_cpu"]]
    assert 0 < len(ops) <= 5 and any("conv" in op for op in ops)  # a CNN's time is in its convs
    assert (tmp_path / "trace.json").stat().st_size > 0 and (tmp_path / "ops.txt").is_file()
