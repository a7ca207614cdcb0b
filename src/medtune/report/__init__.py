"""The report stage: report.md and a self-contained report.html from the files in a run directory.

Imports no torch, transformers, peft, trl or datasets.
"""

from medtune.report.write import ReportResult, write_report

__all__ = ["ReportResult", "write_report"]
