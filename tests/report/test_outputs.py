"""A command's outputs: the result's data (its own ``save``) and the figure the report draws from
it, written together; the result alone writes its data and no figure."""

import errno
import os

import pytest

from isplit.analysis import Analysis
from isplit.classes import classes_report
from isplit.report import figures
from isplit.report.outputs import save_analysis, save_classes

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_save_analysis_writes_the_data_and_the_figure(demo_run, tmp_path):
    a = Analysis.load(demo_run)
    assert save_analysis(a, tmp_path / "run") == tmp_path / "run"
    assert _files(tmp_path / "run") == ["curves.json", "curves.png", "per_image.npz"]
    assert (tmp_path / "run" / "curves.png").read_bytes().startswith(PNG_MAGIC)
    assert Analysis.load(tmp_path / "run").to_json() == a.to_json()

    a.save(tmp_path / "data")  # the result alone: its data, no figure
    assert _files(tmp_path / "data") == ["curves.json", "per_image.npz"]


def _full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_save_analysis_writes_all_or_nothing(demo_run, tmp_path, monkeypatch):
    a = Analysis.load(demo_run)
    monkeypatch.setattr(figures, "plot_curves", _full)  # the figure fails
    with pytest.raises(OSError):
        save_analysis(a, tmp_path / "run")
    assert not (tmp_path / "run").exists() or _files(tmp_path / "run") == []
    monkeypatch.undo()
    monkeypatch.setattr("isplit.analysis.result.atomic_write_json", _full)  # the data fails
    with pytest.raises(OSError):
        save_analysis(a, tmp_path / "run")
    assert _files(tmp_path / "run") == []  # not curves.png without curves.json


def test_save_classes_writes_the_data_and_the_heat_map(demo_run, tmp_path):
    a = Analysis.load(demo_run)
    rep = classes_report(a, ["Sandal", "Bag"])
    save_classes(rep, a, tmp_path)
    assert _files(tmp_path) == ["classes.json", "classes.png"]
    assert (tmp_path / "classes.png").stat().st_size > 10_000


def test_a_plan_the_library_wrote_gets_its_figure_from_the_report(demo_run_copy):
    from isplit.deploy.plan import Link, make_plan
    from isplit.report import write_report

    run = demo_run_copy
    make_plan(run, Link(1.25e6, 0.02), device_speed=1e9, server_speed=5e10, out=run)
    assert (run / "plan.json").is_file() and not (run / "plan.png").exists()  # the data only
    html = write_report(run, samples=0).read_text()
    assert (run / "plan.png").read_bytes().startswith(PNG_MAGIC)
    section = html.split('<section id="plan">')[1].split("</section>")[0]
    assert "data:image/png;base64," in section
