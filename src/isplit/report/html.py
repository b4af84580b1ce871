"""One self-contained HTML page for a run folder (``isplit report RUN``).

The page reads the run (``curves.json``, ``per_image.npz``, ``curves.png`` and, when there,
``validation.json`` / ``validation.png`` and ``plan.json`` / ``plan.png``) and shows, in order:
the model, data and settings with the recommendation; the CUI and CDE curves; the table of split
points; the per-class heat map; the validation results; the latency plan; and Grad-CAM maps of a
few sample images at the candidate points, as in the I-SPLIT paper's teaser figure. Every figure
is embedded as a base64 PNG and the style sheet is inline, so the page needs nothing else (no
network, no JavaScript).

    sections.py            the sections about the analysis, the plan and the Grad-CAM maps
    validation_section.py  the validation section
    maps.py                the Grad-CAM maps of sample images (rebuilds the model and data)
    figures.py             every figure (also curves.png and validation.png)
    markup.py              HTML pieces, the page and its style sheet
"""

from __future__ import annotations

import os
from pathlib import Path

from isplit.analysis import Analysis
from isplit.errors import IsplitError
from isplit.io import atomic_write_bytes
from isplit.report import sections
from isplit.report.maps import gradcam_samples
from isplit.report.markup import page
from isplit.report.validation_section import validation
from isplit.runfolder import RunFolder


def write_report(
    run_dir: str | os.PathLike,
    samples: int | None = None,
    data_root: str | None = None,
    device: str = "cpu",
) -> Path:
    """Write ``RUN_DIR/report.html`` (atomically) and return its path.

    ``samples``: images in the Grad-CAM figure (default one per class, at most 10; 0 leaves the
    figure out, and with it the need for the model and data). ``data_root``: where the run's
    data set is, when not where the analysis found it (for an image-folder data set, the folder).
    """
    run = RunFolder(run_dir)
    analysis = _load_run(run)
    if samples is not None and samples < 0:
        raise IsplitError(f"--samples must be 0 or more, not {samples}")
    # The Grad-CAM figure needs the model and the data: do it first, so a missing data set
    # stops the report before anything is written.
    maps = None if samples == 0 else gradcam_samples(analysis, samples, data_root, device)
    v = run.read(RunFolder.VALIDATION) if run.validation.is_file() else None
    others = [run.read(name) for name in (RunFolder.PLAN, RunFolder.CLASSES) if run.has(name)]
    parts = [
        sections.summary(analysis, v, sections.report_checks(analysis, v, others)),
        sections.curves(analysis, run),
        sections.points_table(analysis),
        sections.classes(analysis),
        validation(analysis, v, run, data_root),
        sections.plan(run),
        sections.gradcam(analysis, maps, samples),
    ]
    title = f"isplit report: {analysis.model} on {analysis.dataset.get('name')}"
    atomic_write_bytes(run.report, page(title, parts).encode("utf-8"))
    return run.report


def _load_run(run: RunFolder) -> Analysis:
    if not run.root.is_dir():
        raise IsplitError(
            f"run folder {run.root} not found: pass the --out folder of an `isplit analyze` run"
        )
    for name in (RunFolder.CURVES, RunFolder.PER_IMAGE):
        if not (run / name).is_file():
            raise IsplitError(
                f"{run.root} has no {name}: it is not a complete `isplit analyze` run folder; "
                f"run `isplit analyze --out {run.root}` first"
            )
    return Analysis.load(run.root)
