"""A class subset's curve, computed from a saved run's per-image curves."""

import numpy as np

from isplit.analysis import Analysis
from isplit.classes import classes_report, subset_curve


def test_subset_of_all_classes_is_the_global_curve(demo_run):
    a = Analysis.load(demo_run)
    names = a.dataset["classes"]
    np.testing.assert_allclose(subset_curve(a, names), a.cui, rtol=1e-6)
    rep = classes_report(a)
    assert rep.best == rep.global_best == a.best
    assert rep.candidates == a.candidates


def test_one_class_subset_is_that_class_curve(demo_run):
    a = Analysis.load(demo_run)
    for c in ("Trouser", "Bag"):
        np.testing.assert_allclose(subset_curve(a, [c]), a.per_class[c], rtol=1e-6)
    rep = classes_report(a, ["Bag"])
    assert rep.best == rep.per_class["Bag"]["best"]
