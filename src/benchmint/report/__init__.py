"""Report layer: one self-contained HTML report (plotly inlined) of RunRecords and their comparison."""

from benchmint.report.api import build_report, select_runs

__all__ = ["build_report", "select_runs"]
