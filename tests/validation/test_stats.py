"""The statistics of validation: rank correlations and their paired comparison, prediction errors,
regret, linear calibration with intervals, leave-one-out combinations."""

import numpy as np
import pytest
from scipy import stats as sps

from isplit.validation.stats import (
    linear_calibration,
    loo_linear,
    predict_accuracy,
    prediction_mae,
    rank_correlations,
    regret,
    spearman_versus,
)


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
