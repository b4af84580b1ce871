"""The library's validation job (isplit.validation.validate_run and its helpers) gives the
report ``isplit validate`` gives: the command only maps its options to these calls."""

import json

import pytest

from isplit.cli import main
from isplit.errors import IsplitError
from isplit.validation import (
    Settings,
    load_validation_data,
    reused_analysis,
    validate_run,
    validation_model,
)

LIMITS = {"train_limit": 200, "test_limit": 100, "epochs": 1, "n_boot": 10, "batch_size": 32}


def _untimed(doc: dict) -> dict:
    """validation.json without the points' training times, the one thing two runs differ in."""
    for p in doc["points"]:
        p.pop("train_seconds")
    return doc


def test_the_library_call_gives_the_commands_report(demo_run, demo_run_copy, tmp_path, capsys):
    point = json.loads((demo_run.joinpath("curves.json")).read_text())["picks"]["isplit"]["point"]
    argv = ["validate", "--analysis", str(demo_run_copy), "--points", point, "--quiet"]
    argv += ["--train-limit", "200", "--test-limit", "100", "--epochs", "1"]
    argv += ["--bootstrap", "10", "--batch-size", "32"]
    assert main(argv) == 0, capsys.readouterr().err
    by_command = json.loads((demo_run_copy / "validation.json").read_text())

    analysis = reused_analysis(demo_run)  # read-only: the library writes elsewhere
    loaded = validation_model(analysis)  # the network the run analysed
    train, test, note = load_validation_data(loaded)  # fashion-mnist, as the command
    assert note is None
    out = tmp_path / "lib"
    report = validate_run(
        loaded, analysis, train, test, out, points=[point], settings=Settings(**LIMITS)
    )
    assert _untimed(json.loads((out / "validation.json").read_text())) == _untimed(by_command)
    assert [p["name"] for p in report.points] == [point]
    assert not (out / "validation.png").exists()  # drawing is the command's


def test_reusing_an_analysis_refuses_the_options_of_validates_own(demo_run):
    assert reused_analysis(None) is None
    with pytest.raises(IsplitError, match="--predictors, --select-by and --probe-ratio"):
        reused_analysis(demo_run, select_by="pca-probe")
