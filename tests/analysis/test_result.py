"""The Analysis result: its table names the predictors by their labels, with the run's ratio."""

import numpy as np
import pytest

from helpers import made_analysis
from isplit.analysis import Analysis
from isplit.graph import SplitPoint


def _analysis(settings: dict, predictors: dict) -> Analysis:
    points = [SplitPoint(f"p{i}", "ReLU", (1, 8, 4, 4), 512, 10 * i, i, True) for i in range(3)]
    return made_analysis(
        points, [0.1, 0.3, 0.2], predictors, settings=settings, candidates=["p1"], best="p1"
    )


@pytest.mark.parametrize("ratio", [4, 16])
def test_the_table_labels_pca_probe_with_the_runs_ratio(ratio):
    run = _analysis({"probe_ratio": ratio}, {"pca-probe": np.array([0.5, 0.6, 0.7])})
    assert run.label("pca-probe") == f"probe on channels / {ratio} principal components"
    legend = run.table().splitlines()[-1]
    assert f"pca-probe: probe on channels / {ratio} principal components" in legend
    assert "/ 8" not in run.table()


def test_a_run_without_pca_probe_has_no_legend_and_the_default_ratio():
    run = _analysis({}, {})
    assert run.probe_ratio == 8
    assert run.table().splitlines()[-1].startswith("p2")
