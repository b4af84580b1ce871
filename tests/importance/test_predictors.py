"""Predictors of post-split accuracy computed in the analysis pass: each against an independent
computation on a tiny model, streaming against batch, shards against one pass, selection, CLI."""

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from helpers import StopAt
from isplit import IsplitError
from isplit.analysis import Analysis, analyze
from isplit.analysis.curves import local_maxima
from isplit.cli import main
from isplit.graph import ModelGraph
from isplit.importance import EXTRAS, GradCAM
from isplit.importance.predictors import PredictorSet, parse_predictors
from isplit.importance.probe import PROBE_HOLDOUT, PROBE_RIDGE, LinearProbe, PcaProbe, holdout_keys
from isplit.importance.registry import PCA_PROBE_RATIO


class Tiny(nn.Module):
    """Conv/BN/ReLU, max-pool, a 1x1 conv without activation, pooling and a linear head: BN shifts
    and biases make the Taylor share differ from 1, and the BN output is a signed activation."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 6, 3, padding=1)
        self.b1 = nn.BatchNorm2d(6)
        self.r1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.c2 = nn.Conv2d(6, 5, 1)
        self.b2 = nn.BatchNorm2d(5)
        self.c3 = nn.Conv2d(5, 7, 3, padding=1)
        self.r3 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(7, 3)

    def forward(self, x):
        x = self.pool(self.r1(self.b1(self.c1(x))))
        x = self.r3(self.c3(self.b2(self.c2(x))))
        return self.fc(torch.flatten(self.gap(x), 1))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    m = Tiny()
    with torch.no_grad():  # non-trivial batch-norm statistics and shifts
        for b in (m.b1, m.b2):
            b.running_mean.uniform_(-0.5, 0.5)
            b.running_var.uniform_(0.5, 2.0)
            b.weight.uniform_(0.5, 1.5)
            b.bias.uniform_(-0.5, 0.5)
    return m.eval()


@pytest.fixture(scope="module")
def tiny_data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(90, 2, 8, 8, generator=g)
    y = torch.randint(0, 3, (90,), generator=g)
    return TensorDataset(x, y)


@pytest.fixture(scope="module")
def tiny_run(tiny, tiny_data):
    return analyze(
        tiny, tiny_data, batch_size=16, predictors="probe,taylor,cam-share", model_name="tiny"
    )


def _by_hand(model, data, name):
    """Activation, its gradient (autograd through the real tail) and the score at ``name``."""
    x, y = data.tensors
    head, tail = ModelGraph(model, tuple(x.shape[1:])).split(name)
    with torch.no_grad():
        a = head(x)
    a.requires_grad_(True)
    score = tail(a).gather(1, y[:, None])[:, 0]
    (g,) = torch.autograd.grad(score.sum(), a)
    return a.detach().double(), g.double(), score.detach().double()


def test_taylor_share_is_gradient_times_activation_over_the_logit(tiny, tiny_data, tiny_run):
    for k, name in enumerate(tiny_run.point_names):
        a, g, s = _by_hand(tiny, tiny_data, name)
        expected = float((g * a).sum() / s.sum())
        assert tiny_run.predictors["taylor"][k] == pytest.approx(expected, rel=1e-5, abs=1e-9)
    # biases and batch-norm shifts after a point make its share differ from 1
    assert not np.allclose(tiny_run.predictors["taylor"], 1.0, atol=1e-3)


def test_cam_share_by_hand(tiny, tiny_data, tiny_run):
    for k, name in enumerate(tiny_run.point_names):
        a, g, _ = _by_hand(tiny, tiny_data, name)
        if a.dim() == 2:
            a, g = a[:, :, None, None], g[:, :, None, None]
        alpha = g.mean((2, 3))[:, :, None, None]
        mass = torch.relu((alpha * a).sum(1)).sum((1, 2))
        bound = (alpha.abs() * a.abs()).sum((1, 2, 3))
        share = torch.where(bound > 0, mass / bound, torch.zeros_like(mass))
        assert tiny_run.predictors["cam-share"][k] == pytest.approx(float(share.mean()), rel=1e-5)
    assert all(0 <= v <= 1 for v in tiny_run.predictors["cam-share"])


def test_taylor_share_is_the_same_before_and_after_a_max_pool(tiny_run):
    """Max-pooling is positively homogeneous and routes the gradient to the maxima, so the
    Taylor sum is unchanged by it; CUI's means divide by 4x fewer positions after it."""
    t = dict(zip(tiny_run.point_names, tiny_run.predictors["taylor"]))
    assert t["pool"] == pytest.approx(t["r1"], rel=1e-5)


def test_normalised_predictors_ignore_a_rescaled_layer(tiny, tiny_data):
    """Scaling a layer's output by 10 and the next layer's weights by 1/10 leaves the network's
    function, and so the Taylor share and the Grad-CAM share, unchanged."""
    scaled = Tiny()
    scaled.load_state_dict(tiny.state_dict())
    scaled.eval()
    with torch.no_grad():
        scaled.b2.weight.mul_(10)
        scaled.b2.bias.mul_(10)
        scaled.c3.weight.div_(10)
    opts = {"predictors": "cam-share,taylor", "batch_size": 32, "points": ["b2", "r3"]}
    one, ten = analyze(tiny, tiny_data, **opts), analyze(scaled, tiny_data, **opts)
    for name in ("cam-share", "taylor"):
        np.testing.assert_allclose(ten.predictors[name], one.predictors[name], rtol=1e-4)


def _pooled(model, data, name):
    x, _ = data.tensors
    head, _ = ModelGraph(model, tuple(x.shape[1:])).split(name)
    with torch.no_grad():
        a = head(x).double()
    return a.flatten(2).mean(2).numpy() if a.dim() > 2 else a.numpy()


def _ridge_by_batch(x, y, classes, held):
    """The probe fitted in one batch with numpy: standardise the training rows, ridge on one-hot
    labels, score the held-out rows."""
    live = x[~held].std(0) > 1e-6 * x[~held].std(0).max()  # constant features carry nothing
    x = x[:, live]
    xt, yt = x[~held], np.eye(classes)[y[~held]]
    mean, std = xt.mean(0), xt.std(0)
    z = (xt - mean) / std
    w = np.linalg.solve(
        z.T @ z / len(z) + PROBE_RIDGE * np.eye(z.shape[1]), z.T @ (yt - yt.mean(0))
    )
    w /= len(z)
    pred = (((x[held] - mean) / std) @ w + yt.mean(0)).argmax(1)
    full = np.zeros((len(live), classes))
    full[live] = w
    return full, float((pred == y[held]).mean())


def test_streaming_probe_equals_a_batch_fit(tiny, tiny_data, tiny_run):
    _, y = tiny_data.tensors
    held = holdout_keys(np.arange(len(y))) < PROBE_HOLDOUT * 2**63
    assert 0 < held.sum() < len(y)
    # the run streamed batches of 16; fit the same probe here in one batch
    for k, name in enumerate(tiny_run.point_names):
        w, accuracy = _ridge_by_batch(_pooled(tiny, tiny_data, name), y.numpy(), 3, held)
        assert tiny_run.predictors["probe"][k] == pytest.approx(accuracy, abs=1e-12)
    probe = LinearProbe(len(tiny_run.point_names), 3)
    cam = GradCAM(ModelGraph(tiny, (2, 8, 8)), tiny_run.point_names)
    x, _ = tiny_data.tensors
    for i in range(0, 90, 16):
        probe.add(
            cam(x[i : i + 16], y[i : i + 16], extras=("pooled",)),
            y[i : i + 16].numpy(),
            np.arange(i, min(i + 16, 90)),
        )
    k = tiny_run.point_names.index("b2")
    w, _ = _ridge_by_batch(_pooled(tiny, tiny_data, "b2"), y.numpy(), 3, held)
    np.testing.assert_allclose(probe.weights(k)[2], w, rtol=1e-4, atol=1e-8)


def _pca_ridge_by_batch(x, y, classes, held, components):
    """The PCA probe in one batch: standardise the training rows, keep their top
    ``components`` principal directions (an SVD of the data), ridge on one-hot labels there."""
    live = x[~held].std(0) > 1e-6 * x[~held].std(0).max()
    x = x[:, live]
    xt, yt = x[~held], np.eye(classes)[y[~held]]
    mean, std = xt.mean(0), xt.std(0)
    z = (xt - mean) / std
    v = np.linalg.svd(z, full_matrices=False)[2][:components].T  # [features, components]
    t = z @ v
    w = np.linalg.solve(t.T @ t / len(t) + PROBE_RIDGE * np.eye(t.shape[1]), t.T @ yt / len(t))
    pred = (((x[held] - mean) / std) @ v @ w + yt.mean(0)).argmax(1)
    return float((pred == y[held]).mean())


def test_pca_probe_equals_a_batch_fit_on_the_top_components(tiny, tiny_data):
    _, y = tiny_data.tensors
    held = holdout_keys(np.arange(len(y))) < PROBE_HOLDOUT * 2**63
    run = analyze(tiny, tiny_data, batch_size=16, predictors="pca-probe,probe")
    for k, p in enumerate(run.points):
        pooled = _pooled(tiny, tiny_data, p.name)
        components = -(-pooled.shape[1] // PCA_PROBE_RATIO)  # 5-7 channels: one component
        expected = _pca_ridge_by_batch(pooled, y.numpy(), 3, held, components)
        assert run.predictors["pca-probe"][k] == pytest.approx(expected, abs=1e-12), p.name
    # wider features, several components: streamed in batches against the batch fit
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (300,), generator=g)
    feats = torch.randn(300, 24, generator=g) @ torch.randn(24, 24, generator=g)
    feats[:, :4] += 2 * torch.nn.functional.one_hot(labels, 4)
    held = holdout_keys(np.arange(300)) < PROBE_HOLDOUT * 2**63
    probe = PcaProbe(1, 4)
    for i in range(0, 300, 64):

        class Batch:
            extras = {"pooled": [feats[i : i + 64]]}

        probe.add(Batch, labels[i : i + 64].numpy(), np.arange(i, min(i + 64, 300)))
    assert probe.components(0) == 3
    expected = _pca_ridge_by_batch(feats.double().numpy(), labels.numpy(), 4, held, 3)
    assert probe.values()[0] == pytest.approx(expected, abs=1e-12)
    full = LinearProbe(1, 4)
    full.load_state(probe.state())  # the same sums: the unrestricted probe sees all 24
    assert full.values()[0] > probe.values()[0]


def test_probe_ratio_sets_the_pca_probe_components(tiny, tiny_data):
    _, y = tiny_data.tensors
    held = holdout_keys(np.arange(len(y))) < PROBE_HOLDOUT * 2**63
    run = analyze(tiny, tiny_data, batch_size=16, predictors="pca-probe", probe_ratio=2)
    assert run.settings["probe_ratio"] == 2
    for k, p in enumerate(run.points):
        pooled = _pooled(tiny, tiny_data, p.name)
        components = -(-pooled.shape[1] // 2)  # 5-7 channels: 3 or 4 components
        expected = _pca_ridge_by_batch(pooled, y.numpy(), 3, held, components)
        assert run.predictors["pca-probe"][k] == pytest.approx(expected, abs=1e-12), p.name
    # a run without pca-probe records no ratio (its fingerprint is as before)
    assert "probe_ratio" not in analyze(tiny, tiny_data, batch_size=16, predictors="cui").settings
    with pytest.raises(IsplitError, match="--probe-ratio"):
        analyze(tiny, tiny_data, predictors="pca-probe", probe_ratio=0)


def test_validate_analysis_takes_the_bottleneck_ratio_for_pca_probe(monkeypatch, tmp_path):
    import isplit.cli.validate as cli

    seen = []

    class Stop(Exception):
        pass

    def capture(args, loaded, data, out, **options):
        seen.append(options["probe_ratio"])
        raise Stop

    monkeypatch.setattr(cli, "analyse_and_save", capture)
    for extra, expected in (([], 16), (["--probe-ratio", "4"], 4)):
        with pytest.raises(Stop):
            main(
                [
                    "validate",
                    "--ratio",
                    "16",
                    "--predictors",
                    "pca-probe",
                    *extra,
                    "--out",
                    str(tmp_path / "v"),
                ]
            )
        assert seen[-1] == expected


def test_probe_learns_a_separable_signal():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (400,), generator=g)
    signal = torch.nn.functional.one_hot(y, 4).float() * 3 + torch.randn(400, 4, generator=g)
    noise = torch.randn(400, 4, generator=g)

    class Batch:
        extras = {"pooled": [signal, noise]}

    probe = LinearProbe(2, 4)
    probe.add(Batch, y.numpy(), np.arange(400))
    good, chance = probe.values()
    assert good > 0.9 and chance < 0.45


def test_probe_projects_wide_features_and_keeps_a_bounded_held_out_sample():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (300,), generator=g)
    wide = torch.randn(300, 40, generator=g)
    wide[:, :3] += 8 * torch.nn.functional.one_hot(y, 3)

    class Batch:
        extras = {"pooled": [wide]}

    probe = LinearProbe(1, 3, dim=16, max_heldout=20)
    probe.add(Batch, y.numpy(), np.arange(300))
    state = probe.state()
    assert state["held0"].shape == (20, 16) and state["gram0"].shape == (16, 16)
    keys = holdout_keys(np.arange(300))
    expected = np.sort(keys[keys < PROBE_HOLDOUT * 2**63])[:20]
    np.testing.assert_array_equal(state["held_keys"], expected)
    assert probe.values()[0] > 0.8


def test_shards_merge_into_one_pass(tiny, tiny_data):
    x, y = tiny_data.tensors
    names = ["probe", "taylor", "cam-share", "pca-probe"]
    graph = ModelGraph(tiny, (2, 8, 8))
    points = [p.name for p in graph.points]
    cam = GradCAM(graph, points)
    whole, shards = (
        PredictorSet(names, len(points), 3),
        [PredictorSet(names, len(points), 3) for _ in range(2)],
    )
    for b, i in enumerate(range(0, 90, 10)):
        idx = np.arange(i, i + 10)
        res = cam(x[idx], y[idx], extras=whole.needs)
        whole.add(res, y[idx].numpy(), idx)
        shards[b % 2].add(res, y[idx].numpy(), idx)  # interleaved, as ranks of a sampler
    merged = shards[1].merge(shards[0])
    for n, v in whole.values().items():
        np.testing.assert_allclose(merged.values()[n], v, rtol=1e-12, err_msg=n)
    a, b = whole.state(), merged.state()
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-6, atol=1e-9, err_msg=key)
    # and a state round trip (checkpoints) gives the same values
    back = PredictorSet.from_state(["cui", *names], len(points), 3, merged.state())
    for n, v in whole.values().items():
        np.testing.assert_allclose(back.values()[n], v, rtol=1e-12, err_msg=n)


def test_select_by_picks_the_argmax_over_admissible_points(tiny, tmp_path):
    # 200 images: the probe's held-out part (37) is enough for it to rank the points
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(
        torch.randn(200, 2, 8, 8, generator=g), torch.randint(0, 3, (200,), generator=g)
    )
    for by in ("cam-share", "taylor", "probe"):
        run = analyze(tiny, data, batch_size=50, select_by=by, last="r3")
        values = run.predictors[by]
        adm = np.array([p.admissible for p in run.points])
        assert adm.sum() >= 3 and not adm.all()
        best = run.point_names.index(run.best)
        assert adm[best] and values[best] == values[adm].max(), by
        assert run.candidates == [run.point_names[i] for i in local_maxima(values, adm)]
        assert run.select_by == by and by in run.predictors
        picked = 0
        for pick in run.budget_picks((0.3, 0.6, 0.9)):
            within = adm & np.array([p.head_flops <= pick["max_head_flops"] for p in run.points])
            if not within.any():
                assert pick["best"] is None
                continue
            picked += 1
            i = np.flatnonzero(within)[values[within].argmax()]
            assert pick["best"] == run.point_names[i]
        assert picked >= 1
    run.save(tmp_path)
    back = Analysis.load(tmp_path)
    assert back.select_by == "probe" and back.best == run.best
    np.testing.assert_array_equal(back.predictors["probe"], run.predictors["probe"])
    assert back.to_json() == run.to_json()


def test_parse_predictors():
    assert parse_predictors(None) == ["cui", "pca-probe"]  # the default: CUI and the evidence
    assert parse_predictors("cui") == ["cui"]
    assert parse_predictors("probe, taylor,probe") == ["cui", "probe", "taylor"]
    assert parse_predictors(["cam-share", "cui"]) == ["cui", "cam-share"]
    with pytest.raises(IsplitError, match="unknown predictor 'nope'.*probe"):
        parse_predictors("probe,nope")


def test_cli_predictors_columns_and_select_by(capsys, tmp_path):
    out = tmp_path / "run"
    # 200 images: enough held out (37) for the probe to rank the points (test_selection.py)
    argv = ["analyze", "--limit", "200", "--batch-size", "50", "--out", str(out), "--quiet"]
    code = main([*argv, "--predictors", "probe,taylor,cam-share", "--select-by", "probe"])
    printed = capsys.readouterr().out
    assert code == 0
    doc = json.loads((out / "curves.json").read_text())
    assert doc["predictors"] == ["cui", "probe", "taylor", "cam-share"]
    assert doc["select_by"] == "probe"
    adm = [p for p in doc["points"] if p["admissible"]]
    assert doc["best"] == max(adm, key=lambda p: p["probe"])["name"]
    assert all({"probe", "taylor", "cam-share"} <= p.keys() for p in doc["points"])
    assert "best split (by probe)" in printed


def test_cli_unknown_predictor_is_exit_2(cli_error, tmp_path):
    out = str(tmp_path / "run")
    err = cli_error("analyze", "--limit", "8", "--out", out, "--predictors", "cui,magic")
    assert "unknown predictor 'magic'" in err and "probe" in err
    err = cli_error("analyze", "--limit", "8", "--out", out, "--select-by", "magic")
    assert "--select-by" in err and "magic" in err
    assert not (tmp_path / "run").exists()


def test_an_interrupted_run_resumes_its_predictors(tiny, tiny_data, tiny_run, tmp_path):
    ckpt = tmp_path / "checkpoint.npz"
    opts = {"batch_size": 16, "predictors": "probe,taylor,cam-share", "model_name": "tiny"}
    with pytest.raises(KeyboardInterrupt):
        analyze(tiny, StopAt(tiny_data, 50), checkpoint=ckpt, checkpoint_seconds=0, **opts)
    with np.load(ckpt) as npz:
        assert "predictor/probe/gram0" in npz.files
    resumed = analyze(tiny, StopAt(tiny_data, 3), checkpoint=ckpt, **opts)
    for name, values in tiny_run.predictors.items():
        np.testing.assert_allclose(resumed.predictors[name], values, rtol=1e-6, err_msg=name)


def test_cost_benchmark_tiny_run(capsys):
    """benchmarks/predictor_cost.py: a tiny real run prints one JSON object with every variant."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "predictor_cost.py"
    spec = importlib.util.spec_from_file_location("predictor_cost", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--models", "demo-vgg16", "--limit", "32", "--batch-size", "32", "--repeats", "1"]
    report = module.main([*argv, "--variants", "probe", "taylor,cam-share"])
    assert json.loads(capsys.readouterr().out) == report
    r = report["models"]["demo-vgg16"]
    assert set(r["seconds"]) == {"cui", "probe", "taylor,cam-share"}
    assert all(v > 0 for v in r["seconds"].values())
    assert set(r["extra"]) == {"probe", "taylor,cam-share"}
    assert isinstance(r["probe_target_met"], bool)


def test_validate_of_a_saved_run_rejects_predictor_options(cli_error, tiny_run, tmp_path):
    tiny_run.save(tmp_path)
    err = cli_error("validate", "--analysis", str(tmp_path), "--predictors", "taylor")
    assert "--predictors" in err and "cui, probe, taylor, cam-share" in err
    assert "--probe-ratio" in cli_error(
        "validate", "--analysis", str(tmp_path), "--probe-ratio", "4"
    )


def test_extras_of_half_precision_tensors_are_summed_in_float32(tiny):
    cam = GradCAM(ModelGraph(tiny, (2, 8, 8)), ["r1"])
    g = torch.Generator().manual_seed(0)
    a, grad = torch.rand(4, 6, 64, generator=g), torch.randn(4, 6, 64, generator=g)  # N, C, P
    alpha = grad.mean(2)
    m = cam._map(a, alpha)
    exact = cam.extras_of(a.double(), grad.double(), alpha.double(), m.double(), EXTRAS)
    half = cam.extras_of(a.bfloat16(), grad.bfloat16(), alpha.bfloat16(), m.bfloat16(), EXTRAS)
    for name in EXTRAS:
        assert half[name].dtype == torch.float32
        torch.testing.assert_close(half[name].double(), exact[name], rtol=0.05, atol=0.02)


def test_probe_sums_keep_the_spread_of_features_far_above_zero():
    """Training rows enter the sums in blocks (float32 products about the block's mean): over
    several blocks, the covariance of features whose mean is 10^4 times their spread matches a
    float64 computation (float32 sums of raw products would lose it entirely)."""
    g = torch.Generator().manual_seed(0)
    n, d = 1500, 6
    feats = 100 + 0.01 * torch.randn(n, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (n,), generator=g)
    probe = LinearProbe(1, 3)
    for i in range(0, n, 64):

        class Batch:
            extras = {"pooled": [feats[i : i + 64].float()]}

        probe.add(Batch, labels[i : i + 64].numpy(), np.arange(i, min(i + 64, n)))
    assert probe._block.rows < 64 * 9  # blocks were added on the way, not all at the end
    state = probe.state()
    fit = holdout_keys(np.arange(n)) >= PROBE_HOLDOUT * 2**63
    x = feats.float().double().numpy()[fit]  # the float32 features the probe saw
    cov = state["gram0"] / state["n"] - np.outer(state["sx0"], state["sx0"]) / state["n"] ** 2
    np.testing.assert_allclose(cov, np.cov(x.T, bias=True), rtol=1e-4, atol=1e-10)
    np.testing.assert_allclose(state["sx0"], x.sum(0), rtol=1e-12)
    np.testing.assert_allclose(state["xy0"], x.T @ np.eye(3)[labels.numpy()[fit]], rtol=1e-12)
