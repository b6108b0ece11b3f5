"""Consistent responses: a pinned model's behaviour fingerprint, and `lock check` against it.

A pin says which bytes a role uses; it cannot say that the answers stayed the same. The same
file answers differently after a llama.cpp upgrade, and a new pin may be worse on the user's
tasks. The fingerprint records, with the pin, the greedy outputs of a small fixed prompt set
for the role's kind (``knowledge/data/fingerprint.toml``), the engine build that made them, and
the quick figures (pass@1 task by task, generation speed with its spread, KLD where one was
measured). ``check`` makes a fresh fingerprint today and compares: outputs token by token,
pass@1 with McNemar's exact test on the paired tasks, speed against the recorded spread; with
``against`` it measures an earlier revision's blob beside the current one, plus the KL-divergence
between them. The thresholds are the lockfile's ``[check]`` table, so a team commits them.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from math import comb
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from .bench import BenchPlan, bench_models, engine_version
from .chat_template import TemplateRenderer
from .engine import EngineError, EngineProcess, EngineSettings
from .errors import LockError, UsageError
from .eval import EvalPlan, EvalReport, evaluate
from .eval.kld import KldPlan, evaluate_kld
from .files import ProgressFn, no_progress
from .knowledge import load_data
from .lock import FingerprintFn, Pin, default_lock_path, pinned_file, read_lock, set_fingerprint, state_at
from .lock.pins import headline_results
from .modelfile import read_model_file
from .results import ResultsDB
from .store import Store

KINDS = ("chat", "complete", "infill")
QUICK_INFILL_HOLES = 20
SPEED_PLAN = BenchPlan(n_prompt=128, n_gen=64, reps=3)
KLD_CHUNKS = 4


# -- thresholds ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Thresholds:
    """When `lock check` calls a difference a regression (the lockfile's ``[check]`` table)."""

    max_changed_prompts: int = 0  # fingerprint prompts whose greedy output may differ
    alpha: float = 0.05  # McNemar's exact test: fewer tasks passed with p below this is a regression
    max_speed_drop: float = 0.20  # generation may be this fraction below the low end of the recorded spread
    max_kld: float = 0.05  # --against: mean KL-divergence (nats) of the current pin from the earlier one

    @classmethod
    def from_table(cls, table: dict[str, Any], where: str) -> Thresholds:
        """The thresholds a lockfile sets; an unknown key or a value out of range is refused, naming it."""
        known = [f.name for f in fields(cls)]
        for key, value in table.items():
            if key not in known:
                raise LockError(f"{where}: [check] has no threshold {key!r}", hint=f"use {', '.join(known)}")
            if not _in_range(key, value):
                raise LockError(f"{where}: [check] {key} = {value!r} is out of range",
                                hint="max_changed_prompts: a whole number ≥ 0; alpha and max_speed_drop: 0 to 1; max_kld: nats ≥ 0")
        return cls(**table)


_LARGEST = {"alpha": 1.0, "max_speed_drop": 1.0, "max_kld": 100.0}  # the fractions and nats a threshold may take


def _in_range(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if key == "max_changed_prompts":
        return isinstance(value, int) and value >= 0
    return isinstance(value, (int, float)) and 0 <= value <= _LARGEST[key]


def mcnemar_exact(only_before: int, only_now: int) -> float:
    """Two-sided exact McNemar p-value for paired pass/fail outcomes: the discordant pairs
    (tasks passed only before, only now) are binomial(n, 1/2) when nothing changed."""
    n = only_before + only_now
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(only_before, only_now) + 1))
    return min(1.0, 2 * tail / 2**n)


# -- the fingerprint ----------------------------------------------------------------------

def role_kind(role: str) -> str:
    """The prompt set for a role, from its name: infill, complete, else chat."""
    kinds = load_data("fingerprint.toml")["kinds"]
    words = set(role.lower().replace("-", "_").split("_"))
    return next((kind for kind, names in kinds.items() if words & set(names)), "chat")


def _prompts(kind: str) -> list[dict[str, str]]:
    data = load_data("fingerprint.toml")[kind]
    if kind == "infill":
        return [{"id": f"infill-{i}", **hole} for i, hole in enumerate(data["holes"], start=1)]
    return [{"id": f"{kind}-{i}", "text": text} for i, text in enumerate(data["prompts"], start=1)]


def _sha(tokens: list[int]) -> str:
    return hashlib.sha256(" ".join(map(str, tokens)).encode()).hexdigest()


def greedy_outputs(path: Path, kind: str, settings: EngineSettings = EngineSettings()) -> tuple[list[dict[str, Any]], str]:
    """The fixed prompts' greedy outputs (one sequence at a time, so batching cannot move a near-tie)
    and the engine build that made them."""
    data = load_data("fingerprint.toml")
    info = read_model_file(path)
    found = []
    with EngineProcess(str(path), replace(settings, n_ctx=1024, n_seq_max=1)) as engine:
        specials = engine.call("special_tokens")
        renderer = TemplateRenderer(info.chat_template or "", specials["bos"], specials["eos"]) if kind == "chat" and info.chat_template else None
        try:
            for prompt in _prompts(kind):
                tokens = _prompt_tokens(engine, prompt, renderer)
                out = engine.call("generate", prompt=tokens, max_tokens=data["max_tokens"], sampling={"temperature": 0.0})
                found.append({"id": prompt["id"], "prompt_sha256": _sha(tokens), "sha256": _sha(out["tokens"]),
                              "tokens": " ".join(map(str, out["tokens"]))})
        finally:
            if renderer is not None:
                renderer.close()
        build = engine_version(engine.call("info")["system_info"])
    return found, build


def _prompt_tokens(engine: EngineProcess, prompt: dict[str, str], renderer: TemplateRenderer | None) -> list[int]:
    if "prefix" in prompt:
        try:
            return list(engine.call("fim_prompt", prefix=prompt["prefix"], suffix=prompt["suffix"]))
        except EngineError as exc:
            raise UsageError(f"an infill role needs fill-in-the-middle tokens: {exc}",
                             hint="pin a Base model with FIM for it, or name the role for chat or completion") from None
    if renderer is not None:
        return list(engine.call("tokenize", text=renderer.render([{"role": "user", "content": prompt["text"]}]), add_special=False))
    return list(engine.call("tokenize", text=prompt["text"], add_special=True))


def quick_accuracy(path: Path, kind: str, *, db: ResultsDB, progress: ProgressFn = no_progress) -> dict[str, Any]:
    """pass@1 task by task on the quick subset (infill roles: the first 20 holes), with its run id."""
    plan = EvalPlan(suite="infill", limit=QUICK_INFILL_HOLES) if kind == "infill" else EvalPlan(subset="quick")
    report = evaluate(str(path), plan, db=db, progress=progress)
    assert isinstance(report, EvalReport)  # HumanEval and infill, never a repository
    passed = [t for t, v in report.per_task.items() if isinstance(v, dict) and v.get("passed")]
    return {"suite": f"infill first {QUICK_INFILL_HOLES}" if kind == "infill" else "humaneval quick",
            "run": report.run_id, "pass_at_1": report.pass_at_1, "tasks": sorted(report.per_task), "passed": sorted(passed)}


def generation_speed(path: Path, *, db: ResultsDB, progress: ProgressFn = no_progress) -> dict[str, Any]:
    """Generation speed: the median of a few repetitions and their low and high ends, with its run id."""
    [speed] = bench_models([str(path)], SPEED_PLAN, db=db, progress=progress)
    if not speed.ok:
        raise UsageError(f"the speed test failed: {speed.error}")
    spread = speed.spread.get("gen_tokens_per_s", {})
    return {"run": speed.run_id, "gen_tokens_per_s": speed.gen_tokens_per_s, "min": spread.get("min"),
            "max": spread.get("max"), "reps": SPEED_PLAN.reps, "n_gen": SPEED_PLAN.n_gen}


def make_fingerprint(path: Path, sha256: str, kind: str, *, figures: bool = True, db: ResultsDB | None = None,
                     progress: ProgressFn = no_progress) -> dict[str, Any]:
    """The fingerprint of the file at ``path`` (whose bytes hash to ``sha256``) for a role of ``kind``."""
    if kind not in KINDS:
        raise UsageError(f"prompt set {kind!r} is not known", hint=f"use {', '.join(KINDS)}")
    progress(f"fingerprint ({kind} prompts)", 0, 1)
    outputs, build = greedy_outputs(path, kind)
    progress(f"fingerprint ({kind} prompts)", 1, 1)
    found: dict[str, Any] = {"set": kind, "version": load_data("fingerprint.toml")["version"], "engine": build, "sha256": sha256,
                             "made_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "outputs": outputs}
    if figures:
        with ResultsDB() if db is None else contextlib.nullcontext(db) as results:
            found["quick"] = quick_accuracy(path, kind, db=results, progress=progress)
            found["speed"] = generation_speed(path, db=results, progress=progress)
            recorded = headline_results(results, sha256)  # the file's latest KLD, a figure kept, not re-run
            if "kld mean_kld" in recorded:
                found["kld"] = {"run": recorded["kld run"], "mean_kld": recorded["kld mean_kld"]}
    return found


def fingerprint_for_add(figures: bool = True, progress: ProgressFn = no_progress) -> FingerprintFn:
    """The hook ``lock.add`` calls to fingerprint the model it pins (the lock layer cannot run eval)."""
    def hook(role: str, path: Path, sha256: str) -> dict[str, Any]:
        try:
            return make_fingerprint(path, sha256, role_kind(role), figures=figures, progress=progress)
        except EngineError as exc:
            raise EngineError(f"the behaviour fingerprint of {path.name} could not be made: {exc.message}",
                              hint="pin it without one with `--fingerprint none` (then `lock check` cannot check it)") from None
    return hook


def record(role: str, *, kind: str | None = None, figures: bool = True, lock_path: Path | None = None,
           store: Store | None = None, progress: ProgressFn = no_progress) -> dict[str, Any]:
    """`lock fingerprint ROLE`: make the pinned model's fingerprint now and record it with the pin."""
    path = default_lock_path(lock_path)
    pin = _pin(role, path)
    file = pinned_file(role, pin, path, store=store, force=True)
    found = make_fingerprint(file, pin.sha256, kind or role_kind(role), figures=figures, progress=progress)
    set_fingerprint(role, pin.sha256, found, lock_path=path)
    return found


def _pin(role: str, lock_path: Path) -> Pin:
    roles = read_lock(lock_path).roles
    if role not in roles:
        raise LockError(f"role {role!r} is not pinned in {lock_path}", hint=f"pinned roles: {', '.join(roles) or 'none'}")
    return roles[role]


# -- comparing ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PromptChange:
    """One fingerprint prompt whose greedy output changed: the first token that differs (index and
    ids), or ``at_token`` None when the prompt itself tokenized differently."""

    id: str
    at_token: int | None
    before: int | None
    now: int | None


@dataclass(frozen=True)
class RoleVerdict:
    """One role's check: what it was compared with, what changed, and the thresholds it broke."""

    role: str
    model: str
    against: str
    cause: str  # what differs between the two sides: "nothing", "engine", "file", "file and engine"
    engine_before: str
    engine_now: str
    sha256_before: str
    sha256_now: str
    prompts: int
    changed: list[PromptChange] = field(default_factory=list)
    pass_before: float | None = None
    pass_now: float | None = None
    passed_only_before: list[str] = field(default_factory=list)
    passed_only_now: list[str] = field(default_factory=list)
    p_value: float | None = None
    speed_before: dict[str, Any] | None = None
    speed_now: dict[str, Any] | None = None
    speed_floor: float | None = None
    kld: float | None = None
    regressions: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.regressions


@dataclass(frozen=True)
class CheckReport:
    lockfile: str
    thresholds: Thresholds
    roles: list[RoleVerdict]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.roles)

    def to_dict(self) -> dict[str, Any]:
        return {"lockfile": self.lockfile, "ok": self.ok, "thresholds": asdict(self.thresholds),
                "roles": [{**asdict(r), "ok": r.ok} for r in self.roles]}


def check(roles: list[str] | None = None, *, against: int | None = None, lock_path: Path | None = None,
          store: Store | None = None, progress: ProgressFn = no_progress) -> CheckReport:
    """Measure each role's pin again today and compare it with its recorded fingerprint (or, with
    ``against``, with the role's pin at that revision, measured beside it now)."""
    path = default_lock_path(lock_path)
    state = read_lock(path)
    if not state.roles:
        raise LockError(f"{path} pins no role", hint="pin one with `variantlab lock add ROLE MODEL`")
    thresholds = Thresholds.from_table(state.check, str(path))
    chosen = roles or list(state.roles)
    pins = {role: _pin(role, path) for role in chosen}
    store = store or Store()
    earlier = state_at(path, against) if against is not None else {}
    plans = {role: _plan(role, pin, path, against, earlier, store) for role, pin in pins.items()}  # all bad input first
    with ResultsDB() as db:
        verdicts = [_check_role(role, pins[role], plans[role], thresholds, db, progress) for role in chosen]
    return CheckReport(str(path), thresholds, verdicts)


@dataclass(frozen=True)
class _Plan:
    kind: str
    figures: bool
    recorded: dict[str, Any] | None  # the fingerprint to compare with (None: measure `earlier` now)
    earlier: Pin | None
    earlier_file: Path | None
    against: str
    current_file: Path


def _plan(role: str, pin: Pin, lock_path: Path, against: int | None, earlier: dict[str, Pin], store: Store) -> _Plan:
    """What to compare a role with, every input checked before anything is measured."""
    current = pinned_file(role, pin, lock_path, store=store)  # a missing or changed blob: refused now
    if against is None:
        if pin.fingerprint is None:
            raise LockError(f"role {role!r} has no fingerprint in {lock_path}", hint=f"record one with `variantlab lock fingerprint {role}`")
        recorded = parse_fingerprint(pin.fingerprint, f"the fingerprint of role {role!r} in {lock_path}")
        return _Plan(recorded["set"], "quick" in recorded, recorded, None, None, "its fingerprint", current)
    if role not in earlier:
        raise LockError(f"role {role!r} was not pinned at revision {against}", hint="see `variantlab lock history`")
    old = earlier[role]
    old_file = pinned_file(role, old, lock_path, store=store)
    kind = (pin.fingerprint or {}).get("set") or role_kind(role)
    return _Plan(kind if kind in KINDS else role_kind(role), True, None, old, old_file, f"revision {against} ({old.model})", current)


def parse_fingerprint(data: dict[str, Any], where: str) -> dict[str, Any]:
    """A recorded fingerprint, checked for the fields a comparison reads; a damaged one is refused."""
    try:
        if data["set"] not in KINDS or not isinstance(data["engine"], str) or not isinstance(data["sha256"], str):
            raise ValueError("set, engine or sha256")
        for out in data["outputs"]:
            [int(t) for t in str(out["tokens"]).split()]
            if not all(isinstance(out[k], str) for k in ("id", "sha256", "prompt_sha256")):
                raise ValueError("an output")
        if "quick" in data:
            if not isinstance(data["quick"]["tasks"], list) or not isinstance(data["quick"]["passed"], list):
                raise ValueError("quick")
        if "speed" in data:
            float(data["speed"]["gen_tokens_per_s"])
            float(data["speed"]["min"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LockError(f"{where} does not parse (bad or missing {exc})",
                        hint="record it again with `variantlab lock fingerprint ROLE`, or restore the lockfile") from None
    return data


def _check_role(role: str, pin: Pin, plan: _Plan, thresholds: Thresholds, db: ResultsDB, progress: ProgressFn) -> RoleVerdict:
    current = plan.current_file
    if plan.recorded is not None:
        before = plan.recorded
    else:
        assert plan.earlier is not None and plan.earlier_file is not None
        before = _earlier_side(plan.earlier, plan.earlier_file, plan.kind, db, progress)
    now = make_fingerprint(current, pin.sha256, plan.kind, figures=plan.figures, db=db, progress=progress)
    kld = None
    if plan.earlier_file is not None:
        kld = evaluate_kld(str(current), str(plan.earlier_file), KldPlan(max_chunks=KLD_CHUNKS), db=db, progress=progress).mean_kld
    return compare(role, pin.model, plan.against, before, now, thresholds, kld)


def _earlier_side(pin: Pin, file: Path, kind: str, db: ResultsDB, progress: ProgressFn) -> dict[str, Any]:
    """The earlier pin measured now: its outputs and speed always; its pass@1 reused from its recorded
    fingerprint when today's engine made that one (greedy decoding gives the same tokens again)."""
    found = make_fingerprint(file, pin.sha256, kind, figures=False, progress=progress)
    recorded = pin.fingerprint or {}
    same_run = recorded.get("engine") == found["engine"] and recorded.get("sha256") == pin.sha256 and recorded.get("set") == kind
    if same_run and isinstance(recorded.get("quick"), dict):
        found["quick"] = recorded["quick"]
    else:
        found["quick"] = quick_accuracy(file, kind, db=db, progress=progress)
    found["speed"] = generation_speed(file, db=db, progress=progress)
    return found


def compare(role: str, model: str, against: str, before: dict[str, Any], now: dict[str, Any], thresholds: Thresholds,
            kld: float | None = None) -> RoleVerdict:
    """The verdict on two fingerprints of one role: outputs, pass@1 (paired), speed, KLD."""
    changed = _changed_outputs(before["outputs"], now["outputs"])
    cause = " and ".join(what for what, differs in (("file", before["sha256"] != now["sha256"]),
                                                   ("engine", before["engine"] != now["engine"])) if differs) or "nothing"
    regressions = []
    if len(changed) > thresholds.max_changed_prompts:
        regressions.append(f"{len(changed)} of {len(now['outputs'])} prompts answer differently "
                           f"(allowed {thresholds.max_changed_prompts}; what differs: {cause})")
    verdict = RoleVerdict(role, model, against, cause, before["engine"], now["engine"], before["sha256"], now["sha256"],
                          len(now["outputs"]), changed, kld=kld)
    if "quick" in before and "quick" in now:
        verdict = _paired(verdict, before["quick"], now["quick"], thresholds, regressions)
    if "speed" in before and "speed" in now:
        verdict = _speed(verdict, before["speed"], now["speed"], thresholds, regressions)
    if kld is not None and kld > thresholds.max_kld:
        regressions.append(f"mean KL-divergence from {against} is {kld:.4f} nats (allowed {thresholds.max_kld})")
    return replace(verdict, regressions=regressions)


def _changed_outputs(before: list[dict[str, Any]], now: list[dict[str, Any]]) -> list[PromptChange]:
    old = {o["id"]: o for o in before}
    found = []
    for out in now:
        prior = old.get(out["id"])
        if prior is None or prior["prompt_sha256"] != out["prompt_sha256"]:
            found.append(PromptChange(out["id"], None, None, None))
        elif prior["sha256"] != out["sha256"]:
            a, b = [int(t) for t in prior["tokens"].split()], [int(t) for t in out["tokens"].split()]
            at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            found.append(PromptChange(out["id"], at, a[at] if at < len(a) else None, b[at] if at < len(b) else None))
    return found


def _paired(verdict: RoleVerdict, before: dict[str, Any], now: dict[str, Any], thresholds: Thresholds,
            regressions: list[str]) -> RoleVerdict:
    """McNemar's exact test on the tasks both sides ran."""
    tasks = set(before["tasks"]) & set(now["tasks"])
    was, is_ = set(before["passed"]) & tasks, set(now["passed"]) & tasks
    only_before, only_now = sorted(was - is_), sorted(is_ - was)
    p = mcnemar_exact(len(only_before), len(only_now))
    if len(only_before) > len(only_now) and p < thresholds.alpha:
        regressions.append(f"pass@1 on {before.get('suite', 'the quick subset')} fell from {len(was)} to {len(is_)} of {len(tasks)} tasks "
                           f"(McNemar exact p = {p:.3g} < {thresholds.alpha})")
    return replace(verdict, pass_before=before.get("pass_at_1"), pass_now=now.get("pass_at_1"), passed_only_before=only_before,
                   passed_only_now=only_now, p_value=p)


def _speed(verdict: RoleVerdict, before: dict[str, Any], now: dict[str, Any], thresholds: Thresholds,
           regressions: list[str]) -> RoleVerdict:
    """Today's median against the low end of the recorded repetitions, less the allowed drop."""
    floor = float(before["min"]) * (1 - thresholds.max_speed_drop)
    if float(now["gen_tokens_per_s"]) < floor:
        regressions.append(f"generation {float(now['gen_tokens_per_s']):.1f} tokens/s is below {floor:.1f} "
                           f"(recorded {float(before['min']):.1f}–{float(before['max'] or before['min']):.1f}, "
                           f"less {thresholds.max_speed_drop:.0%})")
    return replace(verdict, speed_before=before, speed_now=now, speed_floor=floor)


# -- reports for CI -----------------------------------------------------------------------

def to_junit(report: CheckReport) -> str:
    """JUnit XML: one test case per role, failed with its regressions, so CI systems show them."""
    failures = sum(not r.ok for r in report.roles)
    suite = ElementTree.Element("testsuite", name="variantlab lock check", tests=str(len(report.roles)), failures=str(failures))
    for r in report.roles:
        case = ElementTree.SubElement(suite, "testcase", classname="variantlab.lock", name=f"{r.role} ({r.model})")
        if not r.ok:
            failure = ElementTree.SubElement(case, "failure", message="; ".join(r.regressions))
            failure.text = "\n".join(summary_lines(r))
        else:
            ElementTree.SubElement(case, "system-out").text = "\n".join(summary_lines(r))
    return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def to_markdown(report: CheckReport) -> str:
    """A markdown table (for a CI job summary or a pull-request comment), then each role's details."""
    rows = ["| role | model | against | verdict | prompts changed | pass@1 before → now | tokens/s before → now | KLD |",
            "|---|---|---|---|---|---|---|---|"]
    for r in report.roles:
        passes = f"{_num(r.pass_before)} → {_num(r.pass_now)}" if r.pass_now is not None else "-"
        speed = (f"{_num((r.speed_before or {}).get('gen_tokens_per_s'))} → {_num((r.speed_now or {}).get('gen_tokens_per_s'))}"
                 if r.speed_now else "-")
        rows.append(f"| {r.role} | {r.model} | {r.against} | {'pass' if r.ok else '**regression**'} | {len(r.changed)} of {r.prompts} "
                    f"| {passes} | {speed} | {_num(r.kld)} |")
    details = [f"\n### {r.role}\n\n" + "\n".join(f"- {line}" for line in summary_lines(r)) for r in report.roles]
    return "\n".join(rows) + "\n" + "".join(details) + "\n"


def summary_lines(r: RoleVerdict) -> list[str]:
    """One role's verdict in plain lines: what was compared, what changed, what broke a threshold."""
    lines = [f"{r.role}: {r.model} against {r.against}: {'pass' if r.ok else 'REGRESSION'}"]
    if r.engine_before != r.engine_now:
        lines.append(f"engine: {r.engine_before} → {r.engine_now}")
    if r.sha256_before != r.sha256_now:
        lines.append(f"file: {r.sha256_before[:12]}… → {r.sha256_now[:12]}…")
    lines.append(f"outputs: {r.prompts - len(r.changed)} of {r.prompts} prompts identical" + (f" (what differs: {r.cause})" if r.changed else ""))
    for c in r.changed:
        lines.append(f"  {c.id}: " + ("the prompt tokenized differently" if c.at_token is None
                                      else f"differs from token {c.at_token} (id {c.before} → {c.now})"))
    if r.p_value is not None:
        lines.append(f"pass@1: {_num(r.pass_before)} → {_num(r.pass_now)}; passed only before: {', '.join(r.passed_only_before) or 'none'}; "
                     f"only now: {', '.join(r.passed_only_now) or 'none'} (McNemar exact p = {r.p_value:.3g})")
    if r.speed_now is not None and r.speed_before is not None:
        lines.append(f"generation: {_num(r.speed_before['gen_tokens_per_s'])} → {_num(r.speed_now['gen_tokens_per_s'])} tokens/s "
                     f"(floor {_num(r.speed_floor)})")
    if r.kld is not None:
        lines.append(f"mean KL-divergence from {r.against}: {r.kld:.4f} nats")
    lines += [f"regression: {x}" for x in r.regressions]
    return lines


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4g}"


__all__ = ["CheckReport", "KINDS", "PromptChange", "RoleVerdict", "Thresholds", "check", "compare", "fingerprint_for_add",
           "generation_speed", "make_fingerprint", "mcnemar_exact", "parse_fingerprint", "quick_accuracy", "record", "role_kind",
           "summary_lines", "to_junit", "to_markdown"]
