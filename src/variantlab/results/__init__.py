"""The one results database."""

from .db import SETTING_DEFAULTS, Comparison, Metric, ResultsDB, Run, compare

__all__ = ["SETTING_DEFAULTS", "Comparison", "Metric", "ResultsDB", "Run", "compare"]
