"""The report: figures (PNG) and one self-contained HTML page per run folder."""

from isplit.report.html import write_report
from isplit.report.maps import sample_indices
from isplit.report.validation_section import validate_command

__all__ = ["sample_indices", "validate_command", "write_report"]
