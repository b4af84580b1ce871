"""isplit: where to cut a deep network for split computing (I-SPLIT, ICPR 2022).

import isplit
result = isplit.analyze(model, dataset)          # CUI curves, candidates, best split
head, tail = isplit.split_model(model, result.best, (3, 224, 224))

The public names are imported on first use (PEP 562), so that ``import isplit`` and the command
line's ``--help`` do not pay for torch, matplotlib and scipy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from isplit._lazy import lazy_exports
from isplit.errors import IsplitError

if TYPE_CHECKING:
    from isplit.analysis import Analysis, AnalysisSettings, RunOptions, analyze
    from isplit.data import Preprocess, load_dataset
    from isplit.graph import SplitPoint, split_model, split_points
    from isplit.models import load_model

#: public name -> the module that defines it
_LAZY = {
    "Analysis": "isplit.analysis",
    "AnalysisSettings": "isplit.analysis",
    "RunOptions": "isplit.analysis",
    "analyze": "isplit.analysis",
    "Preprocess": "isplit.data",
    "load_dataset": "isplit.data",
    "SplitPoint": "isplit.graph",
    "split_model": "isplit.graph",
    "split_points": "isplit.graph",
    "load_model": "isplit.models",
}

__all__ = [
    "Analysis",
    "AnalysisSettings",
    "IsplitError",
    "Preprocess",
    "RunOptions",
    "SplitPoint",
    "analyze",
    "load_dataset",
    "load_model",
    "split_model",
    "split_points",
]
__version__ = "0.1.0"

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
