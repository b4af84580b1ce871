"""The report's first screen shows every failed self-check before the numbers it qualifies and
flags the accuracy; it names no best predictor where the validation cannot rank predictors; an
unknown CUI reads "n/a", not "−∞"; the settings say the preprocessing used (issue 27, items 6
and 7)."""

import html
import json
import re

from isplit.checks import Check, accuracy_vs_chance, predictor_usable
from isplit.cli import main
from isplit.report.markup import log10_cui
from isplit.report.sections import preprocess_text
from isplit.runfolder import RunFolder


def _page(run) -> str:
    assert main(["report", str(run), "--samples", "0"]) == 0
    return (run / "report.html").read_text(encoding="utf-8")


def _summary(page: str) -> str:
    return re.search(r'<section id="summary">(.*?)</section>', page, re.S).group(1)


def _row(summary: str, name: str) -> str:
    return re.search(rf"<tr><th>{name}</th><td>(.*?)</td></tr>", summary, re.S).group(1)


def _edit_curves(run, edit) -> dict:
    path = run / "curves.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return doc


def _validation(run, unsplit: float, test_images: int, **more) -> dict:
    """A small validation.json (3 points) for the report to read, its figure drawn already."""

    def point(name, accuracy, cui):
        return {
            "name": name,
            "cui": cui,
            "bytes": 4096,
            "encoded_bytes": 512,
            "accuracy": accuracy,
            "accuracy_drop": unsplit - accuracy,
            "probe_accuracy": accuracy - 0.1,
        }

    corr = {"spearman": 1.0, "spearman_ci": [-0.5, 1.0], "kendall": 1.0, "kendall_ci": [-1, 1]}
    doc = {
        "model": "demo-vgg16",
        "settings": {"ratio": 8, "epochs": 1, "train_images": 64, "test_images": test_images},
        "unsplit_accuracy": unsplit,
        "points": [
            point("features.6", 0.5, 1e-3),
            point("features.13", 0.6, None),
            point("features.23", 0.7, 1e-2),
        ],
        "correlation": {"cui": corr, "depth": corr},
        "prediction": {"k": 2, "mae": {"cui": 0.01, "depth": 0.01}},
        "best_predictor": {"by_spearman": "depth", "by_loo_mae": None},  # as written before
        "regret": [],
        **more,
    }
    (run / RunFolder.VALIDATION).write_text(json.dumps(doc))
    (run / RunFolder.VALIDATION_PNG).write_bytes(b"png")
    return doc


def test_a_failed_check_of_the_analysis_is_on_the_first_screen_and_flags_accuracy(
    demo_run_copy, capsys
):
    chance = accuracy_vs_chance(0.1, 500, 10)
    assert not chance.passed
    ok = Check("class_names", True, {"model_classes": None})
    _edit_curves(demo_run_copy, lambda d: d.update(checks=[chance.to_json(), ok.to_json()]))
    summary = _summary(_page(demo_run_copy))
    message = html.escape(chance.message)
    assert summary.count(message) == 1
    assert "1 self-check(s) failed" in summary
    assert summary.index(message) < summary.index("<table")  # before every number
    assert "accuracy_vs_chance" in _row(summary, "Model accuracy")  # the accuracy carries it
    assert "class_names" not in summary  # a check that passed says nothing


def test_every_failed_predictor_check_is_shown_and_flags_its_pick(demo_run_copy, capsys):
    """Two failed checks of one name (one per predictor) are two warnings; each pick shown whose
    predictor cannot rank the points carries the flag, the accuracy does not."""
    flat = predictor_usable("pca-probe", [0.5] * 5)
    unknown = predictor_usable("cui", [float("nan")] * 5)
    assert not flat.passed and not unknown.passed
    _edit_curves(demo_run_copy, lambda d: d.update(checks=[flat.to_json(), unknown.to_json()]))
    summary = _summary(_page(demo_run_copy))
    picks = summary.split('<table class="facts">')[0]
    for c in (flat, unknown):
        assert picks.index(html.escape(c.message)) < picks.index("<table")
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", picks.split("<tbody>")[1], re.S)
    assert rows and all("⚠" in r and "predictor_usable" in r for r in rows)
    assert "⚠" not in _row(summary, "Model accuracy")
    assert _row(summary, "Predictors").count("predictor_usable") == 1


def test_the_checks_of_the_runs_other_results_are_on_the_first_screen(demo_run_copy, capsys):
    """plan.json and classes.json record checks too (plan: bottlenecks that did not learn)."""
    bad = Check("bottlenecks_learned", False, {"points": 2}, "the bottlenecks did not learn")
    (demo_run_copy / RunFolder.CLASSES).write_text(json.dumps({"checks": [bad.to_json()]}))
    summary = _summary(_page(demo_run_copy))
    assert summary.index("the bottlenecks did not learn") < summary.index("<table")


def test_a_run_whose_checks_passed_shows_no_warning(demo_run_copy, capsys):
    summary = _summary(_page(demo_run_copy))
    assert "self-check" not in summary and "flag" not in _row(summary, "Model accuracy")


def test_a_validation_that_measured_another_accuracy_is_a_failed_check(demo_run_copy, capsys):
    """The analysis measured 92.7 % on 300 images; a validation.json whose unsplit model scored
    10 % was made on another model, data or preprocessing: the first screen says so."""
    accuracy = json.loads((demo_run_copy / "curves.json").read_text())["accuracy"]
    _validation(demo_run_copy, 0.10, 500)
    summary = _summary(_page(demo_run_copy))
    assert "the analysis reused here measured" in summary
    assert "validate measures 10.0 % on the unsplit model" in summary
    assert "reused_analysis_accuracy" in _row(summary, "Model accuracy")
    _validation(demo_run_copy, accuracy, 500)  # the same accuracy: nothing to say
    summary = _summary(_page(demo_run_copy))
    assert "self-check" not in summary and "flag" not in _row(summary, "Model accuracy")


def test_the_first_screen_names_no_best_predictor_from_an_unreliable_validation(
    demo_run_copy, capsys
):
    """Item 6: "the best predictor was depth (Spearman 1.00 [-0.50, 1.00])" for a validation
    marked reliable: false, while the command line said "(unreliable)"."""
    accuracy = json.loads((demo_run_copy / "curves.json").read_text())["accuracy"]
    reliability = {"reliable": False, "reason": "the bottleneck did not learn at 3 of 3 points"}
    reliability.update(chance_accuracy=0.1, thresholds={"chance_margin": 0.05})
    reliability["thresholds"]["min_kept_margin"] = 0.5
    _validation(demo_run_copy, accuracy, 500, reliability=reliability)
    page = _page(demo_run_copy)
    said = _row(_summary(page), "Validation")
    assert "best predictor of post-split accuracy was" not in page
    assert "not reliable" in said and "no best predictor" in said
    _validation(demo_run_copy, accuracy, 500)  # reliable, but 3 points
    page = _page(demo_run_copy)
    said = html.unescape(_row(_summary(page), "Validation"))
    assert "best predictor of post-split accuracy was" not in page
    assert "3 validated point(s) cannot rank predictors" in said
    assert "No best predictor:" in page.split('<section id="validation">')[1]


def test_an_unknown_cui_reads_na_in_the_report(demo_run_copy, capsys):
    """Item 7: a CUI that is null in curves.json ("n/a" on the command line) showed "−∞"."""
    assert log10_cui(None) == log10_cui(float("nan")) == "n/a"
    assert log10_cui(0.0) == "−∞" and log10_cui(0.01) == "-2.000"

    def unknown(doc):
        doc["points"][3].update(cui=None, log10_cui=None)

    name = _edit_curves(demo_run_copy, unknown)["points"][3]["name"]
    accuracy = json.loads((demo_run_copy / "curves.json").read_text())["accuracy"]
    _validation(demo_run_copy, accuracy, 500)  # features.13's CUI is null there
    page = _page(demo_run_copy)
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", page.split('<section id="points">')[1], re.S)
    row = next(r for r in rows if f"<code>{name}</code>" in r)
    assert re.findall(r"<td>(.*?)</td>", row)[6] == "n/a"
    validated = page.split('<section id="validation">')[1].split("</section>")[0]
    row = next(r for r in re.findall(r"<tr.*?</tr>", validated) if "features.13" in r)
    assert re.findall(r"<td>(.*?)</td>", row)[1] == "n/a"
    assert "−∞" not in page


def test_the_settings_say_the_preprocessing_used(demo_run_copy, capsys):
    summary = html.unescape(_summary(_page(demo_run_copy)))
    said = re.search(r"<tr><th>Preprocessing</th><td>(.*?)</td>", summary).group(1)
    # the words analyze printed when it ran (and train prints): one description of it
    assert (
        said == "pad to 32 x 32 (larger images: resize, bilinear), greyscale, mean 0.286, std 0.353"
    )
    timm = {"size": 224, "channels": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229] * 3}
    timm.update(resize=235, interpolation="bicubic")
    assert html.unescape(preprocess_text(timm)) == (
        "resize the shorter side to 235 (bicubic), crop 224, RGB, mean 0.485, 0.456, 0.406, "
        "std 0.229, 0.229, 0.229"
    )
    assert preprocess_text(None) == "not recorded"
