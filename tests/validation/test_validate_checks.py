"""validate checks the analysis it reuses: the unsplit model's accuracy on its test images
against chance and against the analysis's accuracy; a failed check is warned on stderr,
recorded in validation.json's checks, and shown once on the report's first screen (issue 27)."""

import html
import json

import torch
from torch.utils.data import TensorDataset

from isplit import analyze, load_model
from isplit.report import write_report
from isplit.validation import Settings, ValidationReport, validate

POINTS = ["features.13", "features.42"]
SETTINGS = Settings(epochs=1, train_limit=64, test_limit=64, n_boot=10, batch_size=64)


def _data():
    loaded = load_model("demo-vgg16")
    x = torch.randn(64, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = loaded.model(x).argmax(1)
    return loaded.model, x, y


def test_validate_on_other_labels_than_the_analysis_warns_and_records(tmp_path, capsys):
    model, x, y = _data()
    right = TensorDataset(x, y)  # the model's own answers: accuracy 1.0
    analysis = analyze(model, right, model_name="demo-vgg16", batch_size=64)
    analysis.save(tmp_path)
    assert analysis.accuracy == 1.0
    wrong = TensorDataset(x, (y + 1) % 10)  # other labels: accuracy 0.0
    capsys.readouterr()
    report = validate(model, analysis, wrong, wrong, tmp_path, points=POINTS, settings=SETTINGS)
    err = capsys.readouterr().err
    failed = {c.name: c for c in report.failed_checks()}
    assert set(failed) == {"accuracy_vs_chance", "reused_analysis_accuracy"}
    assert failed["reused_analysis_accuracy"].values["measured"] == 0.0
    for c in failed.values():
        assert f"isplit: warning: {c.message}\n" in err
    written = json.loads((tmp_path / "validation.json").read_text())
    assert written["checks"] == report.checks
    assert ValidationReport.load(tmp_path).checks == report.checks
    page = write_report(tmp_path, samples=0).read_text(encoding="utf-8")
    summary = page.split('<section id="summary">')[1].split("</section>")[0]
    for c in failed.values():  # each once: the report's own check does not repeat it
        assert summary.count(html.escape(c.message)) == 1


def test_validate_on_the_analysis_data_passes_its_checks(tmp_path, capsys):
    model, x, y = _data()
    data = TensorDataset(x, y)
    analysis = analyze(model, data, model_name="demo-vgg16", batch_size=64)
    capsys.readouterr()
    report = validate(model, analysis, data, data, tmp_path, points=POINTS, settings=SETTINGS)
    assert "isplit: warning" not in capsys.readouterr().err
    names = [c["name"] for c in report.checks]
    assert names == ["accuracy_vs_chance", "reused_analysis_accuracy"]
    assert all(c["passed"] for c in report.checks) and not report.failed_checks()
