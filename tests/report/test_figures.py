"""Figures: every PNG is written whole (atomically) and shows what its caption promises."""

import io
import os
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from isplit.report import figures
from isplit.report.figures import plot_curves, save_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_save_figure_writes_a_png_and_closes_the_figure(tmp_path):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [2, 0, 1], color="red", lw=4)
    path = tmp_path / "sub" / "line.png"
    save_figure(fig, path)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (330, 220)  # 3 x 2 inches at 110 dpi
        pixels = np.asarray(im.convert("RGB"), dtype=int)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert red.sum() > 100  # the line was drawn
    assert not plt.fignum_exists(fig.number)  # closed: a long run does not pile figures up
    assert [p.name for p in path.parent.iterdir()] == ["line.png"]  # no temporary file left


def test_save_figure_keeps_a_constrained_layout(tmp_path):
    fig, ax = plt.subplots(layout="constrained")
    ax.plot([0, 1])
    with _no_warnings():
        save_figure(fig, tmp_path / "c.png")  # tight_layout would warn and replace the layout
    assert (tmp_path / "c.png").read_bytes().startswith(PNG_MAGIC)


def test_a_crash_mid_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "curves.png"
    path.write_bytes(b"the old figure")

    def broken(self, f, *args, **kwargs):
        f.write(PNG_MAGIC)  # half a file, then the disk fills up
        raise OSError("No space left on device")

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    monkeypatch.setattr(type(fig), "savefig", broken)
    with pytest.raises(OSError, match="No space"):
        save_figure(fig, path)
    assert path.read_bytes() == b"the old figure"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]
    assert not plt.fignum_exists(fig.number)

    monkeypatch.undo()
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    monkeypatch.setattr(os, "replace", _raise(KeyboardInterrupt))  # killed mid-rename
    with pytest.raises(KeyboardInterrupt):
        save_figure(fig, path)
    assert path.read_bytes() == b"the old figure"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def _raise(exc):
    def f(*args, **kwargs):
        raise exc

    return f


class _no_warnings:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _analysis(predictors=None, select_by="cui"):
    """The fields of an Analysis that the curves figure reads: five points, the middle three
    admissible, CUI peaking at c."""
    names = list("abcde")
    point = SimpleNamespace
    points = [
        point(name=n, admissible=0 < i < 4, bytes=4096 >> i, shape=(1, 8, 4, 4))
        for i, n in enumerate(names)
    ]
    predictors = predictors or {}
    return SimpleNamespace(
        point_names=names,
        points=points,
        cui=np.array([1e-4, 1e-3, 1e-2, 1e-3, 1e-5]),
        candidates=["c"],
        best="c",
        select_by=select_by,
        predictors=predictors,
        predictor_names=["cui", *predictors],
        curve=lambda name: predictors[name],
        selection=np.array([1e-4, 1e-3, 1e-2, 1e-3, 1e-5]),
        settings={"target": "label", "reduction": "mean", "protocol": "isplit"},
        model="demo",
        dataset={"name": "digits", "images": 10},
    )


def _lines(monkeypatch):
    """Capture the figures' axes (labels and data) when they are saved."""
    seen = []

    def capture(fig, path):
        seen.extend(fig.axes)
        save_figure(fig, path)

    monkeypatch.setattr(figures, "save_figure", capture)
    return seen


def test_curves_figure_plots_log10_cui_and_the_output_size(tmp_path, monkeypatch):
    axes = _lines(monkeypatch)
    plot_curves(_analysis(), tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG_MAGIC)
    assert len(axes) == 2  # no further predictors: CUI above, CDE below
    cui = {ln.get_label(): ln for ln in axes[0].get_lines()}
    np.testing.assert_allclose(cui["CUI (mean over images)"].get_ydata(), [-4, -3, -2, -3, -5])
    np.testing.assert_allclose(cui["best split: c"].get_xydata(), [[2, -2]])
    np.testing.assert_allclose(cui["candidate (local max)"].get_xydata(), [[2, -2]])
    cde = {ln.get_label(): ln for ln in axes[1].get_lines()}
    np.testing.assert_allclose(cde["output size (CDE)"].get_ydata(), [4, 2, 1, 0.5, 0.25])


def test_curves_figure_scales_every_predictor_over_the_admissible_points(tmp_path, monkeypatch):
    axes = _lines(monkeypatch)
    probe = np.array([0.9, 0.2, 0.4, 0.6, 0.1])
    plot_curves(_analysis({"probe": probe}, select_by="probe"), tmp_path / "curves.png")
    assert len(axes) == 3
    lines = {ln.get_label(): ln for ln in axes[1].get_lines()}
    y = lines["probe (selects the best split)"].get_ydata()
    np.testing.assert_allclose(y[1:4], [0, 0.5, 1])  # min-max over the admissible points
    assert np.isnan(y[[0, 4]]).all()  # the inadmissible ones are left out
    np.testing.assert_allclose(lines["log10 cui"].get_ydata()[1:4], [0, 1, 0])
