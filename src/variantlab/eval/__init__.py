"""Accuracy: HumanEval pass@k, fill-in-the-middle, and quantization loss (KL-divergence).

``run`` drives generation and scoring, ``sandbox`` runs every generated program outside
variantlab's process, ``humaneval`` and ``infill`` define the suites, ``kld`` the comparison
of token distributions against a reference model.
"""

from .reports import EvalReport, KldReport, RepoReport, SamplesReport, Scores
from .run import EvalPlan, evaluate, score_samples
from .sandbox import Limits, Outcome, Program, SandboxError, run_program, run_programs

__all__ = ["EvalPlan", "EvalReport", "KldReport", "Limits", "Outcome", "Program", "RepoReport", "SamplesReport", "SandboxError", "Scores",
           "evaluate", "run_program", "run_programs", "score_samples"]
