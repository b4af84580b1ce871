"""--precision: bf16 under autocast gives CUI close to fp32 (the maps' channel sum in bf16 with
float32 accumulation adds far less error than the bf16 pass itself); an unsupported precision
for the device is a clear error."""

import json

import numpy as np
import pytest
import torch

import isplit.importance.gradcam as gradcam
from isplit import IsplitError, analyze, load_dataset, load_model
from isplit.importance import autocast_dtype


@pytest.fixture(scope="module")
def demo():
    loaded = load_model("demo-vgg16")
    return loaded, load_dataset("fashion-mnist", "test", loaded.preprocess)


def test_bf16_curves_are_close_to_fp32_and_pick_the_same_split(demo):
    loaded, data = demo
    fp32 = analyze(loaded, data, limit=128, batch_size=64)
    bf16 = analyze(loaded, data, limit=128, batch_size=64, precision="bf16")
    assert bf16.settings["precision"] == "bf16" and fp32.settings["precision"] == "fp32"
    assert bf16.fingerprint != fp32.fingerprint
    assert bf16.per_image.dtype == np.float32
    rel = np.abs(bf16.cui - fp32.cui) / fp32.cui
    assert np.median(rel) < 0.01  # bfloat16 keeps 8 bits of mantissa
    assert np.abs(np.log10(bf16.cui) - np.log10(fp32.cui)).max() < 0.05  # decades
    assert bf16.best == fp32.best and bf16.candidates == fp32.candidates
    assert (bf16.predictions == fp32.predictions).mean() > 0.95
    assert not np.array_equal(bf16.per_image, fp32.per_image)  # it did run in bfloat16


def test_bf16_maps_add_little_to_the_error_of_the_bf16_pass(demo, monkeypatch):
    loaded, data = demo
    fp32 = analyze(loaded, data, limit=64, batch_size=32)
    bf16 = analyze(loaded, data, limit=64, batch_size=32, precision="bf16")
    # the same bf16 pass, its maps made from a float32 copy of every activation (as before)
    monkeypatch.setattr(
        gradcam, "_weighted_channel_sum", lambda a, w: torch.bmm(w[:, None, :], a.float())[:, 0]
    )
    float_maps = analyze(loaded, data, limit=64, batch_size=32, precision="bf16")
    mask = np.array([p.admissible for p in fp32.points])
    maps_error = np.abs(bf16.cui - float_maps.cui)[mask] / float_maps.cui[mask]
    pass_error = np.abs(float_maps.cui - fp32.cui)[mask] / fp32.cui[mask]
    assert maps_error.max() < 2e-3 and maps_error.max() < pass_error.max() / 5
    assert bf16.best == float_maps.best == fp32.best


def test_a_user_autocast_around_analyze_leaves_the_fp32_result_unchanged(demo):
    loaded, data = demo
    fp32 = analyze(loaded, data, limit=16, batch_size=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = analyze(loaded, data, limit=16, batch_size=8)
    assert res.per_image.dtype == np.float32 and res.settings["precision"] == "fp32"
    # --precision decides the forward pass's type, not an autocast region around the call
    np.testing.assert_allclose(res.per_image, fp32.per_image, rtol=1e-5)
    assert res.best == fp32.best and res.fingerprint == fp32.fingerprint


def test_unsupported_precision_is_a_clear_error(demo, cli_error, tmp_path):
    loaded, data = demo
    with pytest.raises(IsplitError, match="fp16 needs a CUDA GPU"):
        analyze(loaded, data, limit=8, precision="fp16")
    with pytest.raises(IsplitError, match="--precision must be one of"):
        analyze(loaded, data, limit=8, precision="fp8")
    assert autocast_dtype("fp32", "cpu") is None
    assert autocast_dtype("bf16", "cpu") is torch.bfloat16
    out = tmp_path / "run"
    message = cli_error("analyze", "--limit", "8", "--precision", "fp16", "--out", str(out))
    assert "fp16 needs a CUDA GPU" in message
    assert not out.exists()  # nothing half-written


def test_cli_records_the_precision(tmp_path):
    from isplit.cli import main

    assert (
        main(["analyze", "--limit", "16", "--precision", "bf16", "--quiet", "--out", str(tmp_path)])
        == 0
    )
    assert json.loads((tmp_path / "curves.json").read_text())["settings"]["precision"] == "bf16"
