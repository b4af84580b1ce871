"""A command's outputs: a result's data, written by the result itself (its ``save``: JSON, NPZ),
and its figure, drawn here from the result. The results know nothing of drawing (they import
neither this package nor matplotlib); the commands call these functions, which write the data
and the figure together: both, or neither (a full disk half-way leaves the folder as it was).

    save_analysis    curves.json, per_image.npz and curves.png      (isplit analyze)
    save_classes     classes.json and classes.png                   (isplit classes)
    save_plan        plan.json and plan.png                         (isplit plan)
    draw_validation  validation.png beside the validation.json that validate wrote
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from isplit.io import staged
from isplit.report import figures
from isplit.runfolder import RunFolder

if TYPE_CHECKING:
    from isplit.analysis import Analysis
    from isplit.classes import ClassesReport
    from isplit.deploy.plan import Plan
    from isplit.validation.result import ValidationReport


def save_analysis(result: Analysis, out: str | os.PathLike) -> Path:
    """Write ``curves.json``, ``per_image.npz`` and ``curves.png`` into ``out``; returns the
    folder."""
    with staged():  # the figure first: results derived from an older run are set aside last
        figures.plot_curves(result, RunFolder(out) / RunFolder.CURVES_PNG)
        return result.save(out)


def save_classes(report: ClassesReport, analysis: Analysis, out: str | os.PathLike) -> Path:
    """Write ``classes.json`` and ``classes.png`` (the per-class heat map of ``analysis``, the
    run ``report`` was made from) into ``out``; returns the JSON's path."""
    with staged():
        figures.plot_classes(analysis, report.to_json(), RunFolder(out) / RunFolder.CLASSES_PNG)
        return report.save(out)


def save_plan(plan: Plan, out: str | os.PathLike) -> Path:
    """Write ``plan.json`` and ``plan.png`` into ``out``; returns the JSON's path."""
    with staged():
        figures.plot_plan(plan.to_json(), RunFolder(out) / RunFolder.PLAN_PNG)
        return plan.save(out)


def draw_validation(report: ValidationReport, analysis: Analysis, out: str | os.PathLike) -> Path:
    """Draw ``validation.png`` (CUI and accuracy over the points of ``analysis``, the run
    validated) into ``out``, where :func:`isplit.validation.validate` wrote ``validation.json``;
    returns its path."""
    path = RunFolder(out) / RunFolder.VALIDATION_PNG
    figures.plot_validation(analysis, report.to_json(), path)
    return path
