"""Importance: Grad-CAM (or another CAM method, :data:`isplit.importance.registry.CAMS`) at every
split point in one forward and one backward pass, and the further predictors of post-split
accuracy (:mod:`isplit.importance.registry` names them without importing torch; the names below
are imported on first use)."""

from __future__ import annotations

from isplit._lazy import lazy_exports

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

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
