"""How the validation's baselines (scored beside the analysis's predictors) are called in tables,
figures and the report. Torch-free. The analysis's predictors are labelled by
:func:`isplit.importance.registry.predictor_label`."""

from __future__ import annotations

BASELINE_LABELS: dict[str, str] = {
    "bytes": "− output bytes (CDE)",
    "depth": "depth",
    "logistic-probe": "logistic probe (validation's training images)",
    "combo": "combination: CUI, bytes, depth (leave-one-out)",
    "combo-probe": "combination: CUI, bytes, depth, probe (leave-one-out)",
}
