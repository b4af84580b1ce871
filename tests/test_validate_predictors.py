"""validate scores every predictor of the analysis: calibration to an absolute accuracy with an
interval, leave-one-out combinations of cheap signals, regret of each predictor's pick."""

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from isplit.analysis import analyze
from isplit.models import load_model
from isplit.report import write_report
from isplit.stats import linear_calibration, loo_linear, predict_accuracy
from isplit.validate import Settings, validate


def test_linear_calibration_leave_one_out_by_hand():
    x = np.array([0.1, 0.4, 0.35, 0.8, 0.9, 0.6])
    y = np.array([0.80, 0.86, 0.84, 0.90, 0.93, 0.85])
    cal = linear_calibration(x, y, k=3)
    slope, intercept = np.polyfit(x, y, 1)
    assert cal["fit"]["slope"] == pytest.approx(slope)
    assert cal["fit"]["intercept"] == pytest.approx(intercept)
    loo = [
        abs(np.polyval(np.polyfit(np.delete(x, i), np.delete(y, i), 1), x[i]) - y[i])
        for i in range(6)
    ]
    assert cal["loo_mae"] == pytest.approx(np.mean(loo))
    assert 0 <= cal["loo_coverage"] <= 1 and cal["loo_halfwidth"] > 0
    assert linear_calibration(x[:2], y[:2])["fit"] is None


def test_prediction_intervals_cover_as_stated():
    """On data that is a line plus Gaussian noise, 95 % of new points fall in the interval."""
    rng = np.random.default_rng(0)
    inside = []
    for _ in range(2000):
        x = rng.uniform(0, 1, 8)
        y = 0.8 + 0.1 * x + rng.normal(0, 0.01, 8)
        new = rng.uniform(0, 1)
        pred, lo, hi = predict_accuracy(x, y, np.array([new]))[0]
        inside.append(lo <= 0.8 + 0.1 * new + rng.normal(0, 0.01) <= hi)
        assert lo < pred < hi
    assert np.mean(inside) == pytest.approx(0.95, abs=0.015)


def test_loo_linear_recovers_a_linear_law_and_never_sees_the_point_it_predicts():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(9, 3))
    acc = 0.9 + features @ np.array([0.01, -0.02, 0.005])
    pred = loo_linear(features, acc)
    np.testing.assert_allclose(pred, acc, atol=2e-4)
    moved = acc.copy()
    moved[4] += 0.5
    again = loo_linear(features, moved)
    assert again[4] == pytest.approx(pred[4])  # its own accuracy did not enter its prediction
    assert loo_linear(features[:5], acc[:5]) is None  # fewer than features + 3 points


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
    assert list(report["correlation"]) == names
    assert list(report["prediction"]["mae"]) == names
    acc = np.array([p["accuracy"] for p in report["points"]])
    adm = [p.name for p in analysis.points if p.admissible]
    for name in names:
        cal = report["calibration"][name]
        assert cal["loo_mae"] is not None, name
        if name in ("probe", "taylor", "cam-share", "cui", "bytes", "depth"):
            assert list(cal["predicted"]) == adm  # an absolute prediction at every admissible point
            assert all(lo <= v <= hi for v, lo, hi in cal["predicted"].values())
    assert report["calibration"]["probe"]["raw_mae"] == pytest.approx(
        np.mean([abs(p["accuracy"] - p["scores"]["probe"]) for p in report["points"]])
    )
    for r in report["regret"]:
        within = np.array([p["name"] in _within(analysis, r) for p in report["points"]])
        for name in names:
            score = np.array([p["scores"][name] for p in report["points"]], dtype=float)
            if not within.any():
                assert r["regret_by"][name] is None
                continue
            i = np.flatnonzero(within)[np.argmax(score[within])]
            assert r["regret_by"][name] == pytest.approx(acc[within].max() - acc[i])
            assert r["pick_by"][name] == report["points"][i]["name"]
        assert r["regret_best_probe"] == r["regret_by"]["logistic-probe"]
    best = report["best_predictor"]["by_spearman"]
    assert best in names
    assert report["correlation"][best]["spearman"] == max(
        c["spearman"] for c in report["correlation"].values() if c["spearman"] is not None
    )
    page = (write_report(tmp_path, samples=0)).read_text()
    assert "the best predictor of post-split accuracy was" in page
    assert "<th>probe</th><th>taylor</th><th>cam-share</th>" in page  # the point table
    assert "regret: combo-probe" in page and "Predicted accuracy at every admissible" in page


def _within(analysis, budget):
    attr = "head_flops" if budget["kind"] == "flops" else "bytes"
    return {p.name for p in analysis.points if getattr(p, attr) <= budget["limit"]}
