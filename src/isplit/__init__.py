"""isplit: where to cut a deep network for split computing (I-SPLIT, ICPR 2022)."""

from isplit.errors import IsplitError

__all__ = ["IsplitError"]
__version__ = "0.1.0"
