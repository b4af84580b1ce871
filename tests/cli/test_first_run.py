"""What a first-time user relies on: reproducible random-weight runs, runs that record (and
rebuild) the network they analysed, resumes that refuse other weights, Ctrl-C that saves, the
user's model left as it was, headline advice that says how much of the model the head holds, and
results of an older analysis set aside."""

import json
import logging

import numpy as np
import pytest
import torch

import isplit
from helpers import StopAt
from isplit.analysis import Analysis, AnalysisInterrupted, analyze
from isplit.cli import main
from isplit.models import load_model, weights_fingerprint


@pytest.fixture(scope="module")
def fmnist():
    pp = load_model("demo-vgg16").preprocess
    return isplit.load_dataset("fashion-mnist", "test", pp)


def cli(capsys, *argv):
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---- 1. seeded random initialisation, recorded and rebuilt --------------------------------


def test_random_weights_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = load_model("demo-resnet50", "none")
    assert torch.rand(1) == before  # the global random state is untouched
    b = load_model("demo-resnet50", "none")
    c = load_model("demo-resnet50", "none", seed=1)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert a.weights == "none" and a.seed == 0 and c.seed == 1


def test_two_random_weight_runs_are_identical_and_rebuild_the_same_network(capsys, tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        argv = ["analyze", "--model", "demo-resnet50", "--weights", "none", "--limit", "48"]
        code, _, _ = cli(capsys, *argv, "--batch-size", "16", "--out", str(out), "--quiet")
        assert code == 0
        runs.append(Analysis.load(out))
    a, b = runs
    np.testing.assert_array_equal(a.per_image, b.per_image)
    assert a.best == b.best
    assert a.settings["weights"] == "none" and a.settings["seed"] == 0
    rebuilt = a.load_model()  # what report / validate / classes --validate use
    assert rebuilt.fingerprint() == a.settings["weights_sha256"]
    assert rebuilt.name == "demo-resnet50"


def test_rebuilding_refuses_changed_weights(tmp_path, fmnist):
    path = tmp_path / "w.safetensors"
    loaded = load_model("demo-vgg16", "none")
    isplit.models.save_weights(loaded.model, str(path), {"model": "demo-vgg16"})
    run = analyze(load_model("demo-vgg16", str(path)), fmnist, limit=16, batch_size=16)
    assert run.settings["weights"] == str(path)
    assert run.load_model().fingerprint() == run.settings["weights_sha256"]
    isplit.models.save_weights(load_model("demo-vgg16", "none", seed=5).model, str(path), {})
    with pytest.raises(isplit.IsplitError, match="not the ones the run used"):
        run.load_model()


# ---- 2 and 11. Ctrl-C saves a checkpoint; a resume with other weights is refused ----------


def test_interrupt_saves_and_resume_refuses_other_weights(tmp_path, fmnist):
    ckpt = tmp_path / "checkpoint.npz"
    kw = {"batch_size": 16, "workers": 0, "checkpoint": ckpt}
    net = load_model("demo-resnet50", "none")
    with pytest.raises(AnalysisInterrupted, match="32 of 80 images analysed") as info:
        analyze(net, StopAt(fmnist, 40, n=80), **kw)
    assert "rerun the same command to resume" in str(info.value) and ckpt.exists()

    other = load_model("demo-resnet50", "none", seed=1)
    with pytest.raises(isplit.IsplitError, match="other model or weights"):
        analyze(other, StopAt(fmnist, n=80), **kw)

    resumed = analyze(net, StopAt(fmnist, n=80), **kw)
    whole = analyze(net, StopAt(fmnist, n=80), batch_size=16, workers=0)
    np.testing.assert_allclose(resumed.per_image, whole.per_image, rtol=1e-6)
    assert not ckpt.exists()


def test_ctrl_c_on_the_command_line_says_what_was_saved(capsys, tmp_path, fmnist, monkeypatch):
    import isplit.data

    stop = {"at": 40}
    monkeypatch.setattr(
        isplit.data,
        "load_dataset",
        lambda *a, **k: StopAt(fmnist, stop["at"], n=80),
    )
    argv = ["analyze", "--batch-size", "16", "--workers", "0", "--quiet"]
    code, _, err = cli(capsys, *argv, "--out", str(tmp_path / "run"))
    assert code == 130
    assert "32 of 80 images analysed" in err and "rerun the same command" in err
    assert (tmp_path / "run" / "checkpoint.npz").exists()

    stop["at"] = 0  # before the first batch: nothing to save, no empty run folder left
    code, _, err = cli(capsys, *argv, "--out", str(tmp_path / "empty"))
    assert code == 130 and "nothing was saved" in err
    assert not (tmp_path / "empty").exists()


# ---- 3 and 4. the loaded name is recorded; the model is left as it was ---------------------


def test_analyze_records_the_loaded_name_and_restores_training_mode(tmp_path, fmnist):
    loaded = load_model("demo-vgg16")
    loaded.model.train()
    flags = [p.requires_grad for p in loaded.model.parameters()]
    result = analyze(loaded.model, fmnist, limit=16, batch_size=16)
    assert result.model == "demo-vgg16" and result.settings["weights"] == "packaged"
    assert all(m.training for m in loaded.model.modules())
    assert [p.requires_grad for p in loaded.model.parameters()] == flags
    loaded.model.eval()

    plain = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(10)
    )
    plain(torch.zeros(1, 1, 32, 32))
    other = analyze(plain, fmnist, limit=8, batch_size=8)
    assert other.model == "Sequential"
    assert other.settings["weights_sha256"] == weights_fingerprint(plain)


# ---- 5. the share of the model the head holds, and budget picks ---------------------------


def test_head_shares_and_budget_picks(tmp_path, fmnist):
    result = analyze(load_model("demo-resnet50"), fmnist, limit=32, batch_size=32)
    total = result.total_flops
    assert total == pytest.approx(result.points[-1].head_flops, rel=0.05)
    doc = result.to_json()
    for p, d in zip(result.points, doc["points"]):
        assert d["head_flop_share"] == pytest.approx(p.head_flops / total)
        assert 0 <= d["head_param_share"] <= 1
    picks = {b["max_flop_share"]: b["best"] for b in doc["budget_picks"]}
    assert set(picks) == {0.25, 0.5}
    for share, name in picks.items():
        within = [
            i for i, p in enumerate(result.points) if p.admissible and p.head_flops <= share * total
        ]
        assert name == result.points[max(within, key=lambda i: result.cui[i])].name
    text = result.recommendation()
    assert "of the model's FLOPs" in text
    best_share = result.flop_share(result.point(result.best))
    assert doc["nearly_all_on_device"] == (best_share >= 0.9)
    if best_share >= 0.9:
        assert "nearly) the whole network" in text and picks[0.25] in text
    assert "best<=25%" in result.table() and "FLOPs%" in result.table()


def test_a_budget_that_leaves_no_point_is_an_error(cli_error, tmp_path):
    argv = ["analyze", "--limit", "8", "--max-bytes", "10", "--out", str(tmp_path / "r")]
    assert "no split point is admissible under --max-bytes 10" in cli_error(*argv)
    assert not (tmp_path / "r").exists()


# ---- 9. random weights and a data set whose classes cannot be the model's ------------------


def test_random_weights_warned_once_and_meaningless_accuracy_noted(capsys, caplog, tmp_path):
    with caplog.at_level(logging.WARNING, logger="isplit"):
        load_model("resnet18")
    assert any("weights are random" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="isplit"):
        load_model("resnet18", "none")  # asked for: no warning
    assert not caplog.records

    argv = ["analyze", "--model", "resnet18", "--weights", "none", "--data", "digits"]
    argv += ["--limit", "32", "--image-size", "32", "--out", str(tmp_path), "--quiet"]
    code, _, err = cli(capsys, *argv)
    assert code == 0 and "accuracy is not meaningful" in err and "--target predicted" in err


# ---- 10. results of an older analysis are set aside ----------------------------------------


def test_derived_results_of_another_analysis_are_moved_aside(capsys, tmp_path, caplog):
    base = ["analyze", "--batch-size", "16", "--out", str(tmp_path), "--quiet"]
    assert cli(capsys, *base, "--limit", "16")[0] == 0
    (tmp_path / "classes.json").write_text("{}")
    (tmp_path / "report.html").write_text("<html></html>")
    assert cli(capsys, *base, "--limit", "16")[0] == 0  # the same analysis: kept
    assert (tmp_path / "classes.json").exists()
    with caplog.at_level(logging.WARNING, logger="isplit"):
        assert cli(capsys, *base, "--limit", "32")[0] == 0
    assert not (tmp_path / "classes.json").exists() and not (tmp_path / "report.html").exists()
    assert (tmp_path / "previous" / "classes.json").exists()
    assert any("moved them to" in r.message for r in caplog.records)
    assert json.loads((tmp_path / "curves.json").read_text())["dataset"]["images"] == 32


# ---- 16. --image-size on a model without its own preset ------------------------------------


def test_image_size_resizes_straight_without_a_preset():
    custom = load_model("resnet18", "none", image_size=64).preprocess
    assert custom.size == 64 and custom.resize is None
    assert load_model("resnet18", "none").preprocess.resize == 256  # ImageNet's default kept
