"""Analysis: its settings, the run loop over the data, checkpoints and the result (CUI curves,
candidates, best split)."""

from isplit.analysis.loop import AnalysisInterrupted
from isplit.analysis.result import Analysis
from isplit.analysis.run import analyze
from isplit.analysis.settings import AnalysisSettings, RunOptions
from isplit.graph.points import restrict

__all__ = [
    "Analysis",
    "AnalysisInterrupted",
    "AnalysisSettings",
    "RunOptions",
    "analyze",
    "restrict",
]
