"""The export job as a library call (:mod:`isplit.deploy.export_job`): it exports what
``isplit export`` exports, with the same checks and accuracies, and no command line."""

from isplit.cli import main
from isplit.deploy import Manifest
from isplit.deploy.export_job import accuracy_line, export_analysis, export_run


def test_the_library_call_exports_what_the_command_exports_and_prints(demo_run, tmp_path, capsys):
    by_command = tmp_path / "command"
    argv = ["export", "--analysis", str(demo_run), "--out", str(by_command), "--check-images", "16"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    expected = Manifest.load(by_command)

    notes = []
    m = export_run(
        tmp_path / "library",
        analysis=export_analysis(demo_run),
        check_images=16,
        on_note=notes.append,
    )
    assert notes == []  # the run's data set is there: no random inputs
    assert m.point == expected.point  # the run's best
    assert m.model == expected.model
    assert m.classes == expected.classes
    assert m.accuracy == expected.accuracy and m.accuracy["split"] is not None
    for key in ("inputs", "agreement", "agreement_int8", "reference", "self_checks"):
        assert m.checks[key] == expected.checks[key]
    line = accuracy_line(m)
    assert line and line in printed.splitlines()
    assert Manifest.load(tmp_path / "library").accuracy == m.accuracy
