"""Class subsets and per-class best splits, computed from a saved run."""

import json

import numpy as np
import pytest

from isplit import IsplitError
from isplit.analysis import Analysis
from isplit.classes import classes_report, subset_curve
from isplit.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["analyze", "--limit", "300", "--out", str(out), "--quiet"]) == 0
    return out


def test_subset_of_all_classes_is_the_global_curve(run):
    a = Analysis.load(run)
    names = a.dataset["classes"]
    np.testing.assert_allclose(subset_curve(a, names), a.cui, rtol=1e-6)
    rep = classes_report(a)
    assert rep["best"] == rep["global_best"] == a.best
    assert rep["candidates"] == a.candidates


def test_one_class_subset_is_that_class_curve(run):
    a = Analysis.load(run)
    for c in ("Trouser", "Bag"):
        np.testing.assert_allclose(subset_curve(a, [c]), a.per_class[c], rtol=1e-6)
    rep = classes_report(a, ["Bag"])
    assert rep["best"] == rep["per_class"]["Bag"]["best"]


def test_per_class_bests_ranking_and_groups(run):
    a = Analysis.load(run)
    rep = classes_report(a, max_head_flops=0.5 * a.points[-1].head_flops)
    present = [c for i, c in enumerate(a.dataset["classes"]) if (a.labels == i).any()]
    assert list(rep["per_class"]) == present
    assert sorted(rep["ranking"]) == sorted(present)
    shifts = [abs(rep["per_class"][c]["shift"]) for c in rep["ranking"]]
    assert shifts == sorted(shifts, reverse=True)
    assert sorted(c for g in rep["groups"] for c in g) == sorted(present)
    assert len(set(rep["most_different"]["classes"])) == 2
    for v in rep["per_class"].values():  # within the budget
        p = a.points[a.point_names.index(v["best"])]
        assert p.head_flops <= 0.5 * a.points[-1].head_flops


def test_classes_cli_and_errors(run, capsys, cli_error):
    assert main(["classes", str(run), "--classes", "Sandal,Sneaker,Ankle boot"]) == 0
    doc = json.loads((run / "classes.json").read_text())
    assert doc["subset"] == ["Sandal", "Sneaker", "Ankle boot"]
    assert {"points", "cui", "candidates", "best", "global_best", "per_class"} <= doc.keys()
    assert (run / "classes.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "most different curves" in out

    def error(*argv):
        return cli_error("classes", *argv)

    assert "Sandal" in error(str(run), "--classes", "Sandle")
    assert "empty" in error(str(run), "--classes", ",")
    (run / "per_image.npz").rename(run / "moved.npz")
    try:
        assert "per-image" in error(str(run))
    finally:
        (run / "moved.npz").rename(run / "per_image.npz")
    with pytest.raises(IsplitError):
        classes_report(Analysis.load(run), [])


def test_classes_validate_compares_subset_and_global_best(run, capsys, tmp_path):
    a = Analysis.load(run)
    budget = str(0.5 * a.points[-1].head_flops)
    argv = [
        "classes",
        str(run),
        "--classes",
        "Dress,Shirt",
        "--max-head-flops",
        budget,
        "--out",
        str(tmp_path),
        "--validate",
        "--train-limit",
        "200",
        "--test-limit",
        "100",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--quiet",
    ]
    assert main(argv) == 0
    doc = json.loads((tmp_path / "classes.json").read_text())
    v = doc["validation"]
    assert v["subset_best"] == doc["best"] and v["global_best"] == doc["global_best"]
    for k in ("subset_best_accuracy", "global_best_accuracy"):
        assert 0 <= v[k] <= 1
    assert v["subset_best_wins"] == (v["subset_best_accuracy"] >= v["global_best_accuracy"])
    assert v["settings"]["train_images"] <= 200
    assert "on the subset's images" in capsys.readouterr().out


def _three_class_run(folder, a_peak: int):
    """A saved run with four points and three classes of five images: classes B and C peak at
    the second point, class A at point ``a_peak``."""
    from isplit.graph import SplitPoint

    points = [
        SplitPoint(
            f"p{i}", "Conv2d", (1, 4, 8 - i, 8 - i), 16 * (8 - i) ** 2, 100 * (i + 1), 10, True
        )
        for i in range(4)
    ]
    peaks = {"A": a_peak, "B": 1, "C": 1}
    rng = np.random.default_rng(0)
    rows, labels = [], []
    for label, peak in enumerate(peaks.values()):
        curve = np.ones(4)
        curve[peak] = 3.0
        rows += [curve + 0.01 * rng.random(4) for _ in range(5)]
        labels += [label] * 5
    per_image, labels = np.array(rows, dtype=np.float32), np.array(labels)
    analysis = Analysis(
        model="demo-vgg16",
        dataset={"name": "synthetic", "split": "test", "images": 15, "classes": list(peaks)},
        settings={"target": "label", "reduction": "mean", "protocol": "default"},
        points=points,
        cui=per_image.mean(0),
        per_class={c: per_image[labels == i].mean(0) for i, c in enumerate(peaks)},
        per_image=per_image,
        labels=labels,
        predictions=labels,
        candidates=["p1"],
        best="p1",
    )
    analysis.save(folder, plot=False)
    return folder


@pytest.mark.parametrize("a_peak", [1, 3])
def test_the_pulling_classes_line_agrees_with_the_table(tmp_path, capsys, a_peak):
    run = _three_class_run(tmp_path, a_peak)
    assert main(["classes", str(run)]) == 0
    out = capsys.readouterr().out
    doc = json.loads((run / "classes.json").read_text())
    shifts = {c: v["shift"] for c, v in doc["per_class"].items()}
    assert shifts == {"A": a_peak - 1, "B": 0, "C": 0}
    line = next(s for s in out.splitlines() if s.startswith("classes pulling the split"))
    if a_peak == 1:  # no class moves the split
        assert doc["pulling"] == [] and line.endswith(
            "none (every class's best split is the global one)"
        )
    else:
        assert doc["pulling"] == ["A"] and line.endswith(": A")
        assert "A" in out.split("classes pulling")[0] and "+2" in out
    assert sorted(doc["ranking"]) == ["A", "B", "C"]  # the full ranking stays in classes.json


def test_a_budget_without_admissible_points_is_an_error(tmp_path, cli_error):
    run = _three_class_run(tmp_path, 3)
    message = cli_error("classes", str(run), "--max-bytes", "10")
    assert "no split point is admissible under --max-bytes 10" in message
    assert "smallest spatial point sends 400 bytes" in message
    assert not (run / "classes.json").exists()
    with pytest.raises(IsplitError, match="--max-head-flops 1"):
        classes_report(Analysis.load(run), ["A"], max_head_flops=1, max_bytes=None)
