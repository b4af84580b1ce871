"""The report's validation section: predictor labels as the run computed them, legacy files."""

import html
import json
import re
from types import SimpleNamespace

from isplit.report.validation_section import found_best, label, validation
from isplit.runfolder import RunFolder


def _analysis(**settings):
    return SimpleNamespace(settings=settings, best="b", select_by="cui")


def _correlation(spearman):
    return {"spearman": spearman, "spearman_ci": [0.1, 0.9], "kendall": 0.5, "kendall_ci": [0, 1]}


def _point(name, accuracy, cui):
    return {
        "name": name,
        "cui": cui,
        "bytes": 4096,
        "encoded_bytes": 512,
        "accuracy": accuracy,
        "accuracy_drop": 0.9 - accuracy,
        "probe_accuracy": accuracy - 0.1,
    }


def _doc(correlation, regret):
    return {
        "model": "demo-vgg16",
        "settings": {"ratio": 8, "halve": False, "epochs": 1, "train_images": 10},
        "unsplit_accuracy": 0.9,
        "points": [_point("a", 0.5, 1e-3), _point("b", 0.8, 1e-2)],
        "correlation": correlation,
        "prediction": {"k": 2, "mae": {k: 0.01 for k in correlation}},
        "regret": regret,
    }


def _section(tmp_path, a, doc) -> str:
    run = RunFolder(tmp_path)
    (tmp_path / RunFolder.VALIDATION).write_text(json.dumps(doc))
    (tmp_path / RunFolder.VALIDATION_PNG).write_bytes(b"png")  # drawn already
    return validation(a, run.read(RunFolder.VALIDATION), run)[2]


def _rows(section: str) -> list[list[str]]:
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr.*?</tr>", section)]
    return [[html.unescape(c) for c in r] for r in rows if r]  # not the header


def test_labels_show_the_runs_pca_probe_ratio():
    assert label(_analysis(probe_ratio=4), "pca-probe") == (
        "probe on channels / 4 principal components"
    )
    assert label(_analysis(), "pca-probe") == "probe on channels / 8 principal components"
    assert label(_analysis(), "depth") == "depth"  # a baseline of validation
    assert label(_analysis(), "logistic-probe") == "logistic probe (validation's training images)"


def test_the_validation_tables_name_pca_probe_with_the_runs_ratio(tmp_path):
    """--probe-ratio 4: the report said "/ 8" in the correlation table and the summary."""
    a = _analysis(probe_ratio=4)
    doc = _doc(
        {"cui": _correlation(0.5), "pca-probe": _correlation(0.9)},
        [{"budget": "any", "pick": "b", "regret": 0, "regret_by": {"cui": 0, "pca-probe": 0.1}}],
    )
    doc["best_predictor"] = {"by_spearman": "pca-probe", "reason": None}  # judged rankable
    section = _section(tmp_path, a, doc)
    rows = _rows(section.split("Does CUI predict accuracy?")[1])
    names = [r[0] for r in rows[:2]]
    assert names == ["CUI (I-SPLIT)", "probe on channels / 4 principal components"]
    assert "/ 8" not in section
    assert "probe on channels / 4 principal components" in found_best(a, doc)


def test_a_validation_written_before_every_predictor_was_scored(tmp_path):
    """Its "probe" was the logistic probe; its regrets had one key per baseline."""
    legacy = _doc(
        {k: _correlation(0.5) for k in ("cui", "bytes", "depth", "probe")},
        [
            {
                "budget": "any",
                "pick": "b",
                "best_accuracy": 0.8,
                "regret": 0.0,
                "regret_smallest_bytes": 0.3,
                "regret_deepest": 0.2,
                "regret_best_probe": 0.1,
            }
        ],
    )
    section = _section(tmp_path, _analysis(), legacy)
    assert "The picks, measured" not in section  # written before validate measured the picks
    correlation = _rows(section.split("Does CUI predict accuracy?")[1].split("<h3>")[0])
    assert [r[0] for r in correlation] == [
        "CUI (I-SPLIT)",
        "− output bytes (CDE)",
        "depth",
        "logistic probe (validation's training images)",
    ]
    assert [r[3] for r in correlation] == ["1.0 pp"] * 4  # its MAE kept with it
    regret_part = section.split("Regret under budgets")[1]
    header = re.findall(r"<th>(.*?)</th>", regret_part)
    assert header[-4:] == [f"regret: {n}" for n in ("cui", "bytes", "depth", "logistic-probe")]
    assert _rows(regret_part)[0][-4:] == ["0.0 pp", "30.0 pp", "20.0 pp", "10.0 pp"]


def test_a_current_validation_is_read_as_written(tmp_path):
    doc = _doc(
        {"cui": _correlation(0.5), "probe": _correlation(0.7)},
        [{"budget": "any", "pick": "b", "regret": 0.0, "regret_by": {"cui": 0.0, "probe": 0.2}}],
    )
    doc["calibration"] = {}
    (tmp_path / RunFolder.VALIDATION).write_text(json.dumps(doc))
    assert RunFolder(tmp_path).read(RunFolder.VALIDATION) == {**doc, "format": 1}


def test_the_section_says_how_each_pick_did(tmp_path):
    doc = _doc({"cui": _correlation(0.5)}, [])
    doc["picks"] = {
        "isplit": {"predictor": "cui", "point": "a", "accuracy": 0.5},
        "evidence": {"predictor": "pca-probe", "point": "b", "accuracy": 0.8},
        "agree": False,
        "evidence_minus_isplit": 0.3,
    }
    section = _section(tmp_path, _analysis(), doc)
    said = (
        "<b>The picks, measured:</b> I-SPLIT&#x27;s pick a: accuracy 0.5000; evidence-backed "
        "pick b: accuracy 0.8000 (+30.00 pp).</p>"
    )
    assert said in section
    assert section.index(said) < section.index("<img")  # above the figure, below the intro
    doc["reliability"] = {"reliable": False, "reason": "r", "chance_accuracy": 0.1}
    doc["reliability"]["thresholds"] = {"chance_margin": 0.05, "min_kept_margin": 0.5}
    assert "(+30.00 pp) (unreliable).</p>" in _section(tmp_path, _analysis(), doc)
