"""Importance: Grad-CAM (or another CAM method, :data:`isplit.importance.registry.CAMS`) at every
split point in one forward and one backward pass, and the further predictors of post-split
accuracy (:mod:`isplit.importance.registry` names them without importing torch; the names below
are imported on first use)."""

from __future__ import annotations

import importlib

#: public name -> the module that defines it
_LAZY = {
    "EXTRAS": "isplit.importance.gradcam",
    "REDUCTIONS": "isplit.importance.gradcam",
    "TARGETS": "isplit.importance.gradcam",
    "GradCAM": "isplit.importance.gradcam",
    "GradCAMPlusPlus": "isplit.importance.gradcampp",
    "Layout": "isplit.graph.layout",
    "Predictor": "isplit.importance.predictors",
    "PredictorSet": "isplit.importance.predictors",
    "autocast_dtype": "isplit.importance.gradcam",
    "check_labels": "isplit.importance.gradcam",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'isplit.importance' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
