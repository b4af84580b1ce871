"""Analysis: the run loop over the data, its settings, checkpoints and the result (CUI curves)."""

from isplit.analysis.run import Analysis, AnalysisInterrupted, AnalysisSettings, analyze, restrict

__all__ = ["Analysis", "AnalysisInterrupted", "AnalysisSettings", "analyze", "restrict"]
