"""Validation: bottleneck shapes, training, statistics, the resumable sweep, CLI and errors."""

import copy
import json
import logging

import numpy as np
import pytest
import torch
from scipy import stats as sps
from torch.utils.data import TensorDataset

from isplit import IsplitError
from isplit.analysis import analyze
from isplit.cli import main
from isplit.graph import ModelGraph
from isplit.models import load_model
from isplit.validation import Settings, train_bottleneck, validate
from isplit.validation.bottleneck import Bottleneck
from isplit.validation.stats import prediction_mae, rank_correlations, regret, spearman_versus


@pytest.mark.parametrize(
    "name,shape",
    [("demo-vgg16", (1, 32, 32)), ("demo-resnet50", (1, 32, 32)), ("resnet18", (3, 64, 64))],
)
def test_bottleneck_shapes_match_at_every_valid_cut(name, shape):
    model = load_model(name, "none").model
    graph = ModelGraph(model, shape, granularity="all")
    spatial = [graph.point(n) for n in graph.all_cuts if len(graph.point(n).shape) == 4]
    assert len(spatial) >= 10
    for p in spatial:
        z = torch.randn(2, *p.shape[1:])
        for halve in (False, True):
            b = Bottleneck(p.shape, ratio=min(8, p.shape[1]), halve=halve).eval()
            assert b(z).shape == z.shape, (p.name, halve)
            code = b.encoder(z)
            assert code.shape[1:] == b.code_shape
            assert b.encoded_bytes == 4 * code[0].numel()
            assert b.encoded_bytes_int8 == code[0].numel() + 5  # + scale and zero point


def test_int8_quantisation_of_the_code_is_within_half_a_step():
    code = torch.rand(3, 4, 5, 5) * torch.tensor([1.0, 10.0, 100.0])[:, None, None, None]
    back = Bottleneck.quantise(code)
    flat = code.flatten(1)  # the quantised range always holds 0
    step = (flat.max(1).values.clamp(min=0) - flat.min(1).values.clamp(max=0)) / 255
    assert ((back - code).abs().flatten(1).max(1).values <= step / 2 + 1e-6).all()
    assert len(torch.unique(back[2])) <= 256


def test_ratio_larger_than_channels_is_an_error():
    with pytest.raises(IsplitError, match="larger than the 16 channels"):
        Bottleneck((16, 8, 8), ratio=32)


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    loaded = load_model("demo-vgg16")
    graph = ModelGraph(loaded.model, (1, 32, 32))
    head, tail = graph.split("features.13")
    x = torch.randn(256, 1, 32, 32)
    with torch.no_grad():
        z = head(x)
        y = loaded.model(x).argmax(1)  # labels the network can fit
    b = Bottleneck(z.shape, ratio=8)
    losses = train_bottleneck(tail, b, z, y, Settings(epochs=4, batch_size=64), "cpu")
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0]
    assert not any(p.requires_grad for p in tail.parameters())  # the tail stayed frozen


def test_distillation_and_tail_finetuning():
    torch.manual_seed(0)
    loaded = load_model("demo-vgg16")
    head, tail = ModelGraph(loaded.model, (1, 32, 32)).split("features.33")
    x = torch.randn(128, 1, 32, 32)
    with torch.no_grad():
        z, teacher = head(x), loaded.model(x)
    y = teacher.argmax(1)
    tuned = copy.deepcopy(tail)
    before = [p.clone() for p in tuned.parameters()]
    model_before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    settings = Settings(epochs=3, batch_size=32, distill=1.0, finetune="tail")
    losses = train_bottleneck(tuned, Bottleneck(z.shape), z, y, settings, "cpu", teacher)
    assert losses[-1] < losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, tuned.parameters()))
    after = loaded.model.state_dict()  # the copy was tuned, not the user's model
    assert all(torch.equal(v, after[k]) for k, v in model_before.items())


def test_rank_correlations_match_scipy():
    rng = np.random.default_rng(0)
    correct = rng.random((6, 400)) < np.linspace(0.5, 0.9, 6)[:, None]
    predictor = np.array([0.1, 0.3, 0.2, 0.5, 0.4, 0.9])
    acc = correct.mean(1)
    res = rank_correlations(predictor, correct, n_boot=300)
    assert res["spearman"] == pytest.approx(sps.spearmanr(predictor, acc).statistic)
    assert res["kendall"] == pytest.approx(sps.kendalltau(predictor, acc).statistic)
    lo, hi = res["spearman_ci"]
    assert -1 <= lo <= hi <= 1
    assert rank_correlations(predictor, correct, n_boot=300) == res  # seeded


def test_spearman_versus_a_baseline_is_paired_over_the_same_resamples():
    rng = np.random.default_rng(0)
    # 12 points whose accuracies rise with depth but dip at every third point (as at narrow
    # points), 3 000 test images: "good" sees the dips, depth does not
    true = np.linspace(0.80, 0.92, 12) - 0.06 * (np.arange(12) % 3 == 2)
    correct = rng.random((12, 3000)) < true[:, None]
    predictors = {"depth": np.arange(12.0), "good": true, "flat": np.ones(12)}
    res = spearman_versus(predictors, "depth", correct, n_boot=400, seed=3)
    assert set(res) == {"good"}  # neither the baseline nor a constant predictor
    marginal = {k: rank_correlations(v, correct, n_boot=400, seed=3) for k, v in predictors.items()}
    good = res["good"]
    assert good["spearman_diff"] == pytest.approx(
        marginal["good"]["spearman"] - marginal["depth"]["spearman"]
    )
    lo, hi = good["ci"]
    assert lo <= good["spearman_diff"] <= hi and good["above"] == (lo > 0)
    assert good["above"]  # the dips are real (6 pp on 3 000 images): better than depth
    assert spearman_versus(predictors, "depth", correct, n_boot=400, seed=3) == res  # seeded
    assert spearman_versus(predictors, "absent", correct, n_boot=10) == {}


def test_prediction_mae_on_known_values():
    # leave-one-out isotonic fits of a line: the ends are clipped (error 0.1), the middle exact
    assert prediction_mae([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4], k=3) == pytest.approx(0.05)
    assert prediction_mae([1, 2], [0.1, 0.2], k=3) is None


def test_regret():
    acc = np.array([0.5, 0.9, 0.7, 0.95])
    within = np.array([True, True, True, False])
    assert regret(acc, within, 2) == {
        "best_accuracy": 0.9,
        "chosen_accuracy": 0.7,
        "regret": pytest.approx(0.2),
    }
    assert regret(acc, ~np.ones(4, bool), 0)["regret"] is None


@pytest.fixture(scope="module")
def small():
    loaded = load_model("demo-vgg16")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(160, 1, 32, 32, generator=g)
    with torch.no_grad():
        y = loaded.model(x).argmax(1)
    data = TensorDataset(x, y)
    analysis = analyze(loaded.model, data, model_name="demo-vgg16", batch_size=80)
    return loaded, data, analysis


def test_sweep_resumes_without_redoing_finished_points(small, tmp_path, monkeypatch):
    import isplit.validation.sweep as v

    loaded, data, analysis = small
    settings = Settings(epochs=1, train_limit=120, test_limit=40, n_boot=20, batch_size=40)
    points = ["features.6", "features.23"]
    real = v._validate_point
    calls = []

    def failing(graph, analysis, name, *args):
        calls.append(name)
        if name == "features.23":
            raise KeyboardInterrupt
        return real(graph, analysis, name, *args)

    monkeypatch.setattr(v, "_validate_point", failing)
    with pytest.raises(KeyboardInterrupt):
        validate(loaded.model, analysis, data, data, tmp_path, points=points, settings=settings)
    assert (tmp_path / "validation_points" / "features.6.json").exists()
    monkeypatch.setattr(
        v,
        "_validate_point",
        lambda g, a, name, *args: (calls.append(name), real(g, a, name, *args))[1],
    )
    report = validate(
        loaded.model, analysis, data, data, tmp_path, points=points, settings=settings
    )
    assert calls == ["features.6", "features.23", "features.23"]
    assert [p["name"] for p in report["points"]] == points
    assert (tmp_path / "validation.png").stat().st_size > 10_000


def test_validation_errors(small, tmp_path):
    loaded, data, analysis = small
    empty = TensorDataset(torch.zeros(0, 1, 32, 32), torch.zeros(0).long())
    with pytest.raises(IsplitError, match="empty"):
        validate(loaded.model, analysis, empty, data, tmp_path, points=["features.6"])
    other = load_model("demo-resnet50")
    with pytest.raises(IsplitError, match="made for demo-vgg16"):
        validate(other.model, analysis, data, data, tmp_path, model_name="demo-resnet50")
    with pytest.raises(IsplitError, match="not in the analysis"):
        validate(loaded.model, analysis, data, data, tmp_path, points=["features.3"])
    few = TensorDataset(*data[:40])
    r50 = analyze(other.model, few, model_name="demo-resnet50")
    with pytest.raises(IsplitError, match="not a valid cut"):
        validate(other.model, r50, few, few, tmp_path, points=["layer1.0.conv2"])


def test_points_narrower_than_the_ratio(small, tmp_path, caplog):
    loaded, data, analysis = small
    settings = Settings(ratio=32, epochs=1, train_limit=40, test_limit=40, n_boot=10)
    narrow = [p.name for p in analysis.points if p.admissible and p.shape[-3] < 32]
    assert narrow  # demo-vgg16's 16-channel points
    # named by the user: an error before any training, nothing written
    with pytest.raises(IsplitError, match=rf"{narrow[0]} \(16 channels\).*--ratio 16 or less"):
        validate(
            loaded.model,
            analysis,
            data,
            data,
            tmp_path,
            points=[narrow[0], "features.42"],
            settings=settings,
        )
    assert not (tmp_path / "validation_points").exists()
    # chosen by isplit (all admissible points): left out with a warning, listed in the report
    report = validate(loaded.model, analysis, data, data, tmp_path, points="all", settings=settings)
    done = [p["name"] for p in report["points"]]
    assert done == [p.name for p in analysis.points if p.admissible and p.name not in narrow]
    assert [s["name"] for s in report["skipped_points"]] == narrow
    assert "leaves no channel" in caplog.text


def test_validate_cli_end_to_end_and_errors(cli_error, tmp_path):
    out = tmp_path / "run"
    args = [
        "validate",
        "--limit",
        "300",
        "--train-limit",
        "400",
        "--test-limit",
        "300",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--bootstrap",
        "50",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(args + ["--points", "features.2,features.13,features.23,features.42"]) == 0
    doc = json.loads((out / "validation.json").read_text())
    assert [p["name"] for p in doc["points"]] == [
        "features.2",
        "features.13",
        "features.23",
        "features.42",
    ]
    for p in doc["points"]:
        assert {
            "name",
            "cui",
            "bytes",
            "encoded_bytes",
            "encoded_bytes_int8",
            "accuracy",
            "accuracy_drop",
            "train_seconds",
        } <= p.keys()
        assert 0 <= p["accuracy"] <= 1 and 0 <= p["accuracy_int8"] <= 1
    assert doc["points"][-1]["accuracy"] > 0.5  # next to the logits two epochs are enough
    for k in ("cui", "bytes", "depth", "logistic-probe"):
        assert {"spearman", "kendall", "spearman_ci", "kendall_ci"} <= doc["correlation"][k].keys()
        assert k in doc["prediction"]["mae"]
    assert len(doc["regret"]) == 3 and 0 < doc["unsplit_accuracy"] <= 1

    def error(*extra):
        return cli_error(*args, "--analysis", str(out), *extra)

    assert "larger than" in error(
        "--points", "features.42", "--ratio", "512", "--out", str(tmp_path / "r")
    )
    assert "unknown split point" in error("--points", "features.99")
    assert "--train-limit must be at least 1" in error("--train-limit", "0")
    assert "made for demo-vgg16" in error("--model", "demo-resnet50")


def test_not_learned_thresholds():
    from isplit.validation import chance_accuracy, not_learned

    assert chance_accuracy(np.arange(10).repeat(5)) == pytest.approx(0.1)  # balanced: 1/classes
    assert chance_accuracy(np.array([0, 0, 0, 1])) == pytest.approx(0.75)  # the majority class
    assert "chance" in not_learned(0.14, unsplit=0.9, chance=0.1)  # within 0.05 of chance
    assert "margin" in not_learned(0.31, unsplit=0.9, chance=0.1)  # keeps 26 % of 0.8
    assert not_learned(0.6, unsplit=0.9, chance=0.1) is None  # keeps 62 %
    assert not_learned(0.5, unsplit=0.5, chance=0.1) is None  # as good as the unsplit model
    assert not_learned(0.12, unsplit=0.12, chance=0.1) is not None  # all at chance


def test_statistics_over_bottlenecks_that_did_not_learn_are_marked(tmp_path, capsys, caplog):
    from isplit.report import write_report

    run = tmp_path / "run"
    assert (
        main(["analyze", "--limit", "64", "--batch-size", "64", "--out", str(run), "--quiet"]) == 0
    )
    argv = ["validate", "--analysis", str(run), "--points", "features.13", "features.42"]
    # a learning rate of ~0: the bottlenecks stay as initialised, as after far too little training
    argv += ["--lr", "1e-12", "--epochs", "1", "--train-limit", "64", "--test-limit", "64"]
    argv += ["--bootstrap", "20", "--batch-size", "32", "--quiet"]
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="isplit"):
        assert main(argv) == 0
    out = capsys.readouterr().out
    doc = json.loads((run / "validation.json").read_text())
    assert doc["unsplit_accuracy"] > 0.7  # the demo network is trained; its bottlenecks are not
    rel = doc["reliability"]
    assert rel["reliable"] is False and rel["not_learned"] == ["features.13", "features.42"]
    assert "did not learn at 2 of 2 point(s)" in rel["reason"] and "--epochs" in rel["reason"]
    assert rel["chance_accuracy"] >= 0.1 and rel["thresholds"]["chance_margin"] == 0.05
    for p in doc["points"]:
        assert p["learned"] is False and p["not_learned_reason"]
    assert all(r["reliable"] is False for r in doc["regret"])
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("not reliable" in w and "features.13, features.42" in w for w in warning)
    assert sum(line.endswith("  did not learn") for line in out.splitlines()) == 2
    assert "NOT RELIABLE" in out and "(unreliable)" in out
    section = write_report(run, samples=0).read_text(encoding="utf-8")
    section = section.split('<section id="validation">')[1].split("</section>")[0]
    assert 'class="warn"' in section and "not reliable" in section
    assert section.count("(did not learn)") == 2 and 'class="ours unreliable"' in section


def test_logistic_probe_that_stops_early_logs_one_line_not_a_warning(monkeypatch, caplog):
    import warnings

    import sklearn.linear_model

    from isplit.validation import linear_probe

    class OneStep(sklearn.linear_model.LogisticRegression):
        def __init__(self, max_iter=100, random_state=None):
            super().__init__(max_iter=1, random_state=random_state)

    monkeypatch.setattr(sklearn.linear_model, "LogisticRegression", OneStep)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(120, 8, 4, 4, generator=g)
    y = torch.randint(0, 3, (120,), generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's ConvergenceWarning would raise here
        with caplog.at_level("INFO", logger="isplit"):
            accuracy = linear_probe(z[:80], y[:80], z[80:], y[80:])
    assert 0.0 <= accuracy <= 1.0
    assert "stopped at 1 iterations before converging" in caplog.text
