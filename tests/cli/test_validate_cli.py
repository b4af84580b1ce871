"""`isplit validate`'s command line: one --batch-size for the analysis (64 unless given) and
the bottlenecks' training (128 unless given), declared with public argparse only."""

from pathlib import Path

import pytest

import isplit.cli.validate as validate_cli
from isplit.analysis import AnalysisSettings
from isplit.cli import main
from isplit.cli.main import build_parser
from isplit.validation import Settings


def test_validate_help_shows_batch_size_and_its_defaults(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["validate", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "--batch-size BATCH_SIZE images per batch (default: 64 in the analysis, 128 in "
        "training)" in text
    )


def test_validate_batch_size_default_applies():
    args = build_parser().parse_args(["validate"])
    assert args.batch_size is None  # not given: each stage keeps its own default
    assert validate_cli._settings(args, None).batch_size == Settings.batch_size == 128
    given = build_parser().parse_args(["validate", "--batch-size", "16"])
    assert validate_cli._settings(given, given.batch_size).batch_size == 16
    assert build_parser().parse_args(["analyze"]).batch_size == 64  # analyze's own, unchanged


class _Stop(Exception):
    pass


def test_validate_runs_its_analysis_with_64_images_per_batch(tmp_path, monkeypatch):
    seen = []

    def stop(args, *a, **kw):
        seen.append(args.batch_size)
        raise _Stop

    monkeypatch.setattr(validate_cli, "analyse_and_save", stop)
    with pytest.raises(_Stop):
        main(
            [
                "validate",
                "--model",
                "demo-vgg16",
                "--data",
                "digits",
                "--limit",
                "8",
                "--match-classes",
                "position",
                "--quiet",
                "--out",
                str(tmp_path / "run"),
            ]
        )
    assert seen == [AnalysisSettings.batch_size] == [64]


def test_validate_parser_uses_no_private_argparse():
    source = Path(validate_cli.__file__).read_text(encoding="utf-8")
    assert "_option_string_actions" not in source and "._actions" not in source
