"""The one results database."""

from .db import Comparison, Metric, ResultsDB, Run, compare

__all__ = ["Comparison", "Metric", "ResultsDB", "Run", "compare"]
