"""benchmarks/scale.py: tiny real runs of its CPU part and of its GPU part (on the CPU)."""

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scale.py"


@pytest.fixture(scope="module")
def scale():
    spec = importlib.util.spec_from_file_location("scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
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


def test_cpu_memory_part_small(scale, capsys, tmp_path):
    """CI's version of the above: the memory part alone (its two worker processes), on few
    images. The scaling part's torchrun launch of analyze is checked in CI by
    tests/analysis/test_distributed.py."""
    out = tmp_path / "scale.json"
    argv = ["--parts", "memory", "--memory-images", "8", "--batch-size", "8"]
    report = scale.main([*argv, "--json-out", str(out)])
    assert json.loads(capsys.readouterr().out) == report == json.loads(out.read_text())
    assert report["errors"] == {} and "cpu_scaling" not in report
    m = report["memory"]
    assert [r["images"] for r in m["runs"]] == [8, 80]
    assert all(r["peak_rss_mb"] > 0 and r["per_image_mb"] >= 0 for r in m["runs"])
    assert m["extra_per_image_curves_mb"] >= 0


def _gpu_part(scale, precisions: list[str], images: int) -> dict:
    return scale.main(
        ["--gpu", "--device", "cpu", "--models", "resnet18", "no_such_model"]
        + ["--precisions", *precisions, "--images", str(images), "--size", "32"]
        + ["--batch-size", "8", "--repeats", "1", "--folder-images", "20"]
    )


def _check_precision(report: dict, precision: str) -> None:
    p = report["gpu"]["models"]["resnet18"][precision]
    assert p["bare_images_per_s"] > 0
    for key in ("engine", "analyze"):
        assert p[f"{key}_images_per_s"] > 0 and p[f"{key}_ratio_to_bare"] > 0
    assert 0 <= p["data_wait_share"] <= 1
    folder = p["folder"]  # the command line over a JPEG folder
    assert folder["images"] == 20 and f"--precision {precision}" in folder["command"]
    assert folder["end_to_end_ratio_to_bare"] > 0 and folder["setup_seconds"] >= 0


def _check_common(report: dict) -> None:
    assert list(report["errors"]) == ["no_such_model.build"]  # the others went on
    loader = report["gpu"]["folder_loader"]
    assert loader["uint8"]["bytes_per_image"] * 4 == loader["float32"]["bytes_per_image"]
    assert report["gpu"]["cuda_matches_cpu"]["ok"]  # here: the CPU against itself
    assert report["gpu"]["models"]["no_such_model"] == {}


@pytest.mark.slow
def test_gpu_part_runs_on_the_cpu_and_survives_a_failure(scale, capsys):
    report = _gpu_part(scale, ["fp32", "bf16"], 24)
    capsys.readouterr()
    _check_common(report)
    for precision in ("fp32", "bf16"):
        _check_precision(report, precision)
    cmp = report["gpu"]["models"]["resnet18"]["bf16_vs_fp32"]
    assert 0 < cmp["cui_median_rel_err"] < 0.05 and isinstance(cmp["best_changed"], bool)
    assert set(report["gpu"]["summary"]) == {
        "resnet18 fp32",
        "resnet18 bf16",
        "resnet18 fp32 JPEG folder, command line",
        "resnet18 bf16 JPEG folder, command line",
        "resnet18 bf16 vs fp32",
    }


def test_gpu_part_small_one_precision(scale, capsys):
    """CI's version of the above: bf16 alone (engine, analyze and the JPEG folder through the
    command line), few images; the fp32 / bf16 comparison is checked on its own below."""
    report = _gpu_part(scale, ["bf16"], 16)
    assert json.loads(capsys.readouterr().out) == report
    _check_common(report)
    _check_precision(report, "bf16")
    assert "fp32" not in report["gpu"]["models"]["resnet18"]
    assert set(report["gpu"]["summary"]) == {
        "resnet18 bf16",
        "resnet18 bf16 JPEG folder, command line",
    }


def test_precisions_are_compared_curve_and_rows(scale):
    import numpy as np

    def result(cui, per_image, best, predictions):
        return SimpleNamespace(
            cui=np.array(cui), per_image=np.array(per_image), best=best,
            candidates=[best], predictions=np.array(predictions),
        )  # fmt: skip

    fp32 = result([1.0, 2.0, 4.0], [[1.0, 2.0, 4.0], [2.0, 2.0, 2.0]], "b", [1, 2])
    bf16 = result([1.0, 2.2, 4.0], [[1.0, 2.0, 4.4], [2.0, 2.0, 2.0]], "c", [1, 3])
    cmp = scale.compare_precisions(fp32, bf16)
    assert cmp["cui_max_rel_err"] == pytest.approx(0.1)
    assert cmp["cui_median_rel_err"] == 0.0
    assert cmp["cui_max_abs_log10_diff"] == pytest.approx(np.log10(1.1))
    assert cmp["per_image_median_rel_err"] == 0.0  # 0.1 in one of six entries
    assert cmp["best_changed"] and cmp["candidates_changed"]
    assert (cmp["best_fp32"], cmp["best_bf16"]) == ("b", "c")
    assert cmp["predictions_agree"] == 0.5


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
