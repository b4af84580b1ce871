"""The classes report (classes.json): per-class best splits against the run's best, the ranking,
the groups, budgets, the command and its errors."""

import json

import numpy as np
import pytest

from isplit import IsplitError
from isplit.analysis import Analysis
from isplit.classes import ClassesReport, classes_report
from isplit.cli import main
from isplit.runfolder import FORMAT


def test_per_class_bests_ranking_and_groups(demo_run):
    a = Analysis.load(demo_run)
    rep = classes_report(a, max_head_flops=0.5 * a.points[-1].head_flops)
    present = [c for i, c in enumerate(a.dataset["classes"]) if (a.labels == i).any()]
    assert list(rep.per_class) == present
    assert sorted(rep.ranking) == sorted(present)
    shifts = [abs(rep.per_class[c]["shift"]) for c in rep.ranking]
    assert shifts == sorted(shifts, reverse=True)
    assert sorted(c for g in rep.groups for c in g) == sorted(present)
    assert len(set(rep.most_different["classes"])) == 2
    for v in rep.per_class.values():  # within the budget
        p = a.points[a.point_names.index(v["best"])]
        assert p.head_flops <= 0.5 * a.points[-1].head_flops


def test_classes_cli_and_errors(demo_run_copy, capsys, cli_error):
    assert main(["classes", str(demo_run_copy), "--classes", "Sandal,Sneaker,Ankle boot"]) == 0
    doc = json.loads((demo_run_copy / "classes.json").read_text())
    assert doc["subset"] == ["Sandal", "Sneaker", "Ankle boot"]
    assert {"points", "cui", "candidates", "best", "global_best", "per_class"} <= doc.keys()
    assert (demo_run_copy / "classes.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "most different curves" in out

    def error(*argv):
        return cli_error("classes", *argv)

    assert "Sandal" in error(str(demo_run_copy), "--classes", "Sandle")
    assert "empty" in error(str(demo_run_copy), "--classes", ",")
    (demo_run_copy / "per_image.npz").rename(demo_run_copy / "moved.npz")
    try:
        assert "per-image" in error(str(demo_run_copy))
    finally:
        (demo_run_copy / "moved.npz").rename(demo_run_copy / "per_image.npz")
    with pytest.raises(IsplitError):
        classes_report(Analysis.load(demo_run_copy), [])


def _three_class_run(folder, a_peak: int, **selection):
    """A saved run with four points and three classes of five images: classes B and C peak at
    the second point, class A at point ``a_peak``; ``selection``: the run's ``predictors``,
    ``select_by`` and ``best`` when it selects by another predictor than CUI."""
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
        **{"best": "p1", **selection},
    )
    analysis.save(folder)
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


def test_a_select_by_run_compares_cui_bests_with_cuis_global_best(tmp_path):
    """A run that selects by the probe predictor: its best split is the probe's maximum (p3),
    CUI's is p1. Per-class and subset curves exist only for CUI, so the report measures every
    shift from CUI's global best (p1: no class pulls), and names the run's own best beside."""
    probe = np.array([0.5, 0.6, 0.7, 0.9])
    selection = {"predictors": {"probe": probe}, "select_by": "probe", "best": "p3"}
    run = _three_class_run(tmp_path, 1, **selection)
    a = Analysis.load(run)
    assert a.best == "p3" and a.select_by == "probe"
    rep = classes_report(a)
    assert rep.global_best == "p1" and rep.global_best_detail["name"] == "p1"
    assert rep.best == "p1" and rep.shift == 0  # the same images, the same curve: no shift
    assert {c: v["shift"] for c, v in rep.per_class.items()} == {"A": 0, "B": 0, "C": 0}
    assert rep.pulling == []
    assert rep.settings["select_by"] == "probe" and rep.settings["compared_by"] == "cui"
    assert rep.settings["selected_best"] == "p3"
    table = rep.table()
    assert "global best p1 (shift +0 points)" in table
    assert "(per-class curves exist for CUI only); the run's best split by probe is p3" in table
    # within a budget that leaves p3 out, the run's own best is the probe's best within it
    cheaper = classes_report(a, max_head_flops=300)
    assert cheaper.global_best == "p1" and cheaper.settings["selected_best"] == "p2"


def test_a_cui_run_says_nothing_of_other_predictors(tmp_path):
    rep = classes_report(Analysis.load(_three_class_run(tmp_path, 3)))
    assert "selected_best" not in rep.settings and "CUI only" not in rep.table()


def test_the_report_is_written_and_read_back(demo_run, tmp_path):
    a = Analysis.load(demo_run)
    rep = classes_report(a, ["Sandal", "Bag"], out=tmp_path, max_bytes=None)
    doc = json.loads((tmp_path / "classes.json").read_text())
    assert doc["format"] == FORMAT and "validation" not in doc
    assert not (tmp_path / "classes.png").exists()  # the data only: isplit classes draws it
    assert ClassesReport.load(tmp_path) == rep == ClassesReport.load(tmp_path / "classes.json")
    assert {k: v for k, v in doc.items() if k != "format"} == json.loads(
        json.dumps({k: v for k, v in rep.to_json().items() if k != "format"})
    )
    table = rep.table().splitlines()
    assert table[-1].startswith(f"subset (Sandal, Bag; {rep.images} images): best split {rep.best}")
