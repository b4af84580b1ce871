"""The run folder: the one place that knows the names of the files an analysis and the stages
after it (validation, classes, report, plan) write, and the format they are written in.

    run/
      curves.json  per_image.npz  curves.png  checkpoint.npz      analysis (isplit analyze)
      validation.json  validation.png  validation_points/         validation (isplit validate)
      classes.json  classes.png  classes-validation/              classes (isplit classes)
      report.html                                                 report (isplit report)
      plan.json  plan.png                                         plan (isplit plan)
      previous/                                                   results of an earlier analysis

Every JSON result carries ``format`` (:data:`FORMAT`); files written before it existed have none
and are read as format 0 by :func:`upgrade`, the one place that knows older layouts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from isplit.errors import IsplitError

log = logging.getLogger("isplit")

#: The version of the files' layout; raise it when a field changes meaning or disappears.
FORMAT = 1


class _File:
    """One file of a run folder, read as an attribute: ``folder.curves`` is
    ``folder.root / "curves.json"``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, folder: RunFolder | None, owner: type | None = None) -> Path:
        return self if folder is None else folder.root / self.name


class RunFolder:
    """A run folder and the names of its files (nothing is read or written until asked)."""

    CURVES = "curves.json"
    PER_IMAGE = "per_image.npz"
    CURVES_PNG = "curves.png"
    CHECKPOINT = "checkpoint.npz"
    VALIDATION = "validation.json"
    VALIDATION_PNG = "validation.png"
    VALIDATION_POINTS = "validation_points"
    CLASSES = "classes.json"
    CLASSES_PNG = "classes.png"
    CLASSES_VALIDATION = "classes-validation"
    REPORT = "report.html"
    PLAN = "plan.json"
    PLAN_PNG = "plan.png"
    PREVIOUS = "previous"

    #: What the later stages derive from an analysis: stale once another analysis is written.
    DERIVED = (
        CLASSES,
        CLASSES_PNG,
        CLASSES_VALIDATION,
        VALIDATION,
        VALIDATION_PNG,
        VALIDATION_POINTS,
        REPORT,
        PLAN,
        PLAN_PNG,
    )

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    def __fspath__(self) -> str:
        return os.fspath(self.root)

    curves = _File(CURVES)
    per_image = _File(PER_IMAGE)
    checkpoint = _File(CHECKPOINT)
    validation = _File(VALIDATION)
    classes = _File(CLASSES)
    report = _File(REPORT)
    plan = _File(PLAN)

    def is_analysis(self) -> bool:
        """Whether an analysis was written here (``curves.json`` exists)."""
        return self.curves.is_file()

    def has(self, name: str) -> bool:
        return (self.root / name).exists()

    def read(self, name: str, what: str = "analysis run") -> dict:
        """One JSON result of this folder, upgraded to the current :data:`FORMAT`."""
        from isplit.io import read_json  # numpy: not imported by the command line's --help

        return upgrade(name, read_json(self.root / name, what=what))

    def analysis_fingerprint(self) -> str | None:
        """The fingerprint of the analysis written here, or None (none, or unreadable)."""
        try:
            return json.loads(self.curves.read_text()).get("fingerprint")
        except (OSError, ValueError):
            return None

    def set_aside_stale(self, fingerprint: str | None) -> None:
        """Move results derived from another analysis (not ``fingerprint``) to ``previous/``."""
        if not self.curves.exists():
            return
        before = self.analysis_fingerprint()
        if before is not None and before == fingerprint:
            return  # the same analysis again: what was derived from it still holds
        stale = [self.root / name for name in self.DERIVED if (self.root / name).exists()]
        if not stale:
            return
        aside = self.root / self.PREVIOUS
        if aside.exists():
            shutil.rmtree(aside)
        aside.mkdir()
        for path in stale:
            path.rename(aside / path.name)
        log.warning(
            "%s held results of a different analysis (%s); moved them to %s",
            self.root,
            ", ".join(p.name for p in stale),
            aside,
        )


def _validation_before_predictors(doc: dict) -> dict:
    """A validation.json written before validate scored every predictor (no "calibration"):
    its "probe" was validation's logistic probe, now "logistic-probe", and each budget's regret
    of the baselines' picks sat in regret_smallest_bytes / regret_deepest / regret_best_probe,
    now "regret_by" (keyed like "correlation")."""

    def renamed(scores: dict) -> dict:
        return {("logistic-probe" if k == "probe" else k): v for k, v in scores.items()}

    out = {**doc, "correlation": renamed(doc.get("correlation", {}))}
    if "prediction" in doc:
        out["prediction"] = {**doc["prediction"], "mae": renamed(doc["prediction"].get("mae", {}))}
    old = {"cui": "regret", "bytes": "regret_smallest_bytes", "depth": "regret_deepest"}
    old["logistic-probe"] = "regret_best_probe"
    out["regret"] = [
        r if "regret_by" in r else {**r, "regret_by": {k: r.get(v) for k, v in old.items()}}
        for r in doc.get("regret", [])
    ]
    return out


def upgrade(name: str, doc: dict) -> dict:
    """``doc`` (the contents of the run folder's file ``name``) in the current format: the one
    place where layouts written by older versions of isplit are read."""
    version = doc.get("format", 0)
    if version == 0 and name == RunFolder.VALIDATION and "calibration" not in doc:
        doc = _validation_before_predictors(doc)
    if not isinstance(version, int) or version > FORMAT:
        raise IsplitError(
            f"{name} was written in format {version!r}, newer than this isplit reads ({FORMAT}): "
            "upgrade isplit (pip install -U isplit)"
        )
    return {**doc, "format": FORMAT}


def upgrade_checkpoint(state: dict) -> dict:
    """A checkpoint's arrays (``checkpoint.npz``) in the current layout: checkpoints written
    before pca-probe existed lack the probe's channel widths (zeros: unknown, as pca-probe was
    not computed)."""
    import numpy as np  # not at the top: the command line's --help imports this module

    for name in ("probe", "pca-probe"):
        prefix = f"predictor/{name}/"
        if f"{prefix}n" in state and f"{prefix}widths" not in state:
            points = sum(1 for key in state if key.startswith(f"{prefix}sx"))
            state = {**state, f"{prefix}widths": np.zeros(points, dtype=np.int64)}
    return state
