"""isplit: where to cut a deep network for split computing (I-SPLIT, ICPR 2022).

import isplit
result = isplit.analyze(model, dataset)          # CUI curves, candidates, best split
head, tail = isplit.split_model(model, result.best, (3, 224, 224))
"""

from isplit.analysis import Analysis, analyze
from isplit.data import Preprocess, load_dataset
from isplit.errors import IsplitError
from isplit.graph import SplitPoint, split_model, split_points
from isplit.models import load_model

__all__ = [
    "Analysis",
    "IsplitError",
    "Preprocess",
    "SplitPoint",
    "analyze",
    "load_dataset",
    "load_model",
    "split_model",
    "split_points",
]
__version__ = "0.1.0"
