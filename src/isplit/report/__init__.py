"""The report: figures (PNG) and one self-contained HTML page per run folder."""

from isplit.report.html import sample_indices, validate_command, write_report

__all__ = ["sample_indices", "validate_command", "write_report"]
