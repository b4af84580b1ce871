"""Validation: cut the network for real, insert a trained bottleneck, measure accuracy, and score
how well each predictor ranked the points.

- :mod:`~isplit.validation.sweep`: :func:`validate`, the sweep over the points.
- :mod:`~isplit.validation.job`: :func:`validate_run`, a validation job as ``isplit validate``
  runs it (the reused analysis, the model, the data: :func:`reused_analysis`,
  :func:`validation_model`, :func:`load_validation_data`).
- :mod:`~isplit.validation.settings`: its :class:`Settings`.
- :mod:`~isplit.validation.points`: which points it validates, and the budgets of the report.
- :mod:`~isplit.validation.cache`: the head's outputs, computed once per point.
- :mod:`~isplit.validation.bottleneck`, :mod:`~isplit.validation.train`: the bottleneck and
  its training.
- :mod:`~isplit.validation.probe`: the logistic probe (a baseline predictor).
- :mod:`~isplit.validation.distribute`: per-point files; resuming; sharing out under torchrun.
- :mod:`~isplit.validation.scoring`, :mod:`~isplit.validation.stats`,
  :mod:`~isplit.validation.reliability`: scoring the predictors, and whether to trust it.
- :mod:`~isplit.validation.result`: :class:`ValidationReport` (``validation.json``).
- :mod:`~isplit.validation.picks`: the analysis's two picks, measured (its ``picks`` block).
"""

from isplit.validation.distribute import bottleneck_file
from isplit.validation.job import (
    load_validation_data,
    reused_analysis,
    validate_run,
    validation_model,
)
from isplit.validation.probe import linear_probe
from isplit.validation.reliability import chance_accuracy, not_learned
from isplit.validation.result import ValidationReport
from isplit.validation.settings import Settings
from isplit.validation.sweep import validate
from isplit.validation.train import train_bottleneck

__all__ = [
    "Settings",
    "ValidationReport",
    "bottleneck_file",
    "chance_accuracy",
    "linear_probe",
    "load_validation_data",
    "not_learned",
    "reused_analysis",
    "train_bottleneck",
    "validate",
    "validate_run",
    "validation_model",
]
