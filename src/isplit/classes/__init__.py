"""Classes: the best split for the classes a user cares about, from a saved run.

- :mod:`~isplit.classes.curves`: the curve of a class subset (from the per-image curves).
- :mod:`~isplit.classes.report`: :func:`classes_report` and its result, :class:`ClassesReport`
  (``classes.json``).
- :mod:`~isplit.classes.subset`: :func:`validate_subset`, retraining on the subset's images.
"""

from isplit.classes.curves import class_names, subset_curve
from isplit.classes.report import ClassesReport, classes_report
from isplit.classes.subset import validate_subset

__all__ = ["ClassesReport", "class_names", "classes_report", "subset_curve", "validate_subset"]
