"""ladder and report without a model: the pick rules against memory and context, the interval,
the stratified subset, and the HTML page rendered in headless Chromium."""

from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from variantlab.errors import UsageError
from variantlab.eval import humaneval as he
from variantlab.fit import FitRequest, estimate, network_from_catalog
from variantlab.knowledge.catalog import find_variant
from variantlab.ladder import (
    LadderPlan,
    LadderResult,
    LadderRow,
    choose,
    eval_plan,
    how_measured,
    plan_settings,
    rules_text,
    suite_settings,
    twin_how_measured,
    wilson_interval,
)
from variantlab.report import pareto_front, write_report

GIB = 2**30
# Measured-looking figures for a 7B ladder: lower rungs faster and less accurate.
FIGURES = {  # type: (gen tokens/s, pass@1, mean KLD)
    "Q2_K": (9.0, 0.48, 0.30), "Q3_K_M": (8.0, 0.55, 0.10), "Q4_K_M": (7.0, 0.60, 0.04),
    "Q5_K_M": (6.0, 0.61, 0.015), "Q6_K": (5.2, 0.62, 0.006), "Q8_0": (4.1, 0.62, 0.001),
}


def rows_at(ctx: int, ram_gib: float, problems: int = 164) -> list[LadderRow]:
    """Ladder rows whose memory and fit verdict come from the real estimator for Qwen2.5-Coder 7B."""
    rows = []
    for ftype, (speed, acc, kld) in FIGURES.items():
        variant = find_variant(f"qwen2.5-coder:7b-instruct-{ftype.lower()}")
        est = estimate(network_from_catalog(variant), FitRequest(ctx=ctx, ram_bytes=int(ram_gib * GIB)))
        passed = round(acc * problems)
        low, high = wilson_interval(passed, problems, 0.95)
        rows.append(LadderRow(file_type=ftype, model=variant.tag, memory_bytes=est.total_bytes, fits=est.fits,
                              file_bytes=est.file_bytes, gen_tokens_per_s=speed, pass_at_1=passed / problems,
                              pass_at_1_low=low, pass_at_1_high=high, mean_kld=kld, passed=passed,
                              problems=problems, load_s=1.0, ttft_s=0.2, lineage="quantized from F16"))
    return rows


def picked(rows: list[LadderRow]) -> dict[str, str | None]:
    return {tier: (p.file_type if p else None) for tier, p in choose(rows).items()}


def test_picks_with_room_to_spare() -> None:
    # Q6_K and Q8_0 tie on pass@1: the lower KLD wins
    assert picked(rows_at(4096, 64)) == {"fastest": "Q2_K", "balanced": "Q4_K_M", "best quality": "Q8_0"}


def test_less_memory_moves_quality_down_and_none_fits_says_so() -> None:
    roomy = rows_at(4096, 64)
    tight = rows_at(4096, 6.5)
    assert [r.fits for r in tight] != [r.fits for r in roomy]
    picks = picked(tight)
    fitting = [r for r in tight if r.fits]
    assert set(picks.values()) <= {r.file_type for r in fitting} and len(fitting) < len(tight)
    assert picks["best quality"] != picked(roomy)["best quality"]
    assert picks["best quality"] == max(fitting, key=lambda r: (r.pass_at_1, -r.mean_kld)).file_type
    assert picked(rows_at(4096, 1)) == {"fastest": None, "balanced": None, "best quality": None}


def test_a_longer_context_needs_more_memory_and_changes_the_picks() -> None:
    short, long = rows_at(4096, 8.5), rows_at(32768, 8.5)  # Q8_0 fits at 4096 (8.0 GiB), not at 32768 (9.6)
    assert all(b.memory_bytes > a.memory_bytes for a, b in zip(short, long))
    assert sum(r.fits for r in long) < sum(r.fits for r in short)
    assert picked(long) != picked(short)
    assert set(picked(long).values()) <= {r.file_type for r in long if r.fits}


def test_balanced_needs_both_accuracy_and_low_kld() -> None:
    rows = [replace(r, mean_kld=0.2) if r.file_type == "Q4_K_M" else r  # Q4_K_M drifts more than the bound:
            for r in rows_at(4096, 64)]                                    # balanced moves up a rung
    assert picked(rows)["balanced"] == "Q5_K_M"
    few = rows_at(4096, 64, problems=10)  # wide intervals: the lowest rung under the KLD bound wins
    assert picked(few)["balanced"] == "Q4_K_M"


def test_rules_state_the_budget_and_the_bound() -> None:
    text = " ".join(rules_text(LadderPlan("m", ctx=8192, ram_bytes=8 * GIB)))
    assert "8192 tokens" in text and "8.0 GiB" in text and "0.05 nats" in text and "Wilson" in text


def test_wilson_interval() -> None:
    low, high = wilson_interval(93, 164, 0.95)
    assert low < 93 / 164 < high and 0.48 < low < 0.50 and 0.63 < high < 0.65
    assert wilson_interval(0, 20, 0.95)[0] == 0.0 and wilson_interval(20, 20, 0.95)[1] == 1.0
    assert wilson_interval(5, 10, 0.95)[1] - wilson_interval(5, 10, 0.95)[0] > wilson_interval(50, 100, 0.95)[1] - wilson_interval(50, 100, 0.95)[0]


def test_pareto_front() -> None:
    points = [(1.0, 10.0), (2.0, 20.0), (3.0, 15.0), (4.0, 30.0)]
    assert pareto_front(points, lower_x_better=True) == [0, 1, 3]
    assert pareto_front(points, lower_x_better=False) == [3]


def test_stratified_subset_is_fixed_and_spans_difficulty() -> None:
    chosen = he.stratified(20)
    assert [p.task_id for p in chosen] == [p.task_id for p in he.stratified(20)]
    lengths = sorted(len(p.canonical_solution.strip()) for p in he.problems().values())
    mine = sorted(len(p.canonical_solution.strip()) for p in chosen)
    assert len(chosen) == 20 and mine[0] <= lengths[len(lengths) // 10] and mine[-1] >= lengths[-len(lengths) // 10]
    with pytest.raises(UsageError):
        he.stratified(0)


def test_a_repository_suite_measures_infilling_tasks_only() -> None:
    plan = LadderPlan("m", task="complete", suite="repo:/some/project").checked()
    assert plan.accuracy_suite == "repo:/some/project" and len(plan.types) == 6
    assert "exact match over the holes" in how_measured(plan, "ref")["accuracy"]
    eplan = eval_plan(suite_settings(plan.suite), plan.accuracy_suite, None)
    assert (eplan.suite_kind, eplan.holes, eplan.seed) == ("repo", 40, 0)
    with pytest.raises(UsageError, match="use --task infill or --task complete"):
        LadderPlan("m", task="chat", suite="repo:/some/project").checked()
    with pytest.raises(UsageError, match="unknown suite 'repo'"):
        LadderPlan("m", task="infill", suite="repo").checked()


def test_plan_checks() -> None:
    assert LadderPlan("m").checked().types == ("Q2_K", "Q3_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")
    assert len(LadderPlan("m", suite="full").checked().types) == 10
    for bad in (LadderPlan("m", suite="huge"), LadderPlan("m", task="poetry"), LadderPlan("m", ctx=10**9),
                LadderPlan("m", types=("Q9_K",))):
        with pytest.raises(UsageError):
            bad.checked()


def test_reps_override_the_suites_bench_repetitions_only() -> None:
    plan = LadderPlan("m", reps=2).checked()
    assert plan_settings(plan)["bench_reps"] == 2 and plan_settings(LadderPlan("m"))["bench_reps"] == 3
    assert plan_settings(plan)["humaneval_subset"] == suite_settings("quick")["humaneval_subset"]
    assert "--reps 2" in how_measured(plan, "ref")["speed"] and "--reps 2" in twin_how_measured(plan, plan_settings(plan))["speed"]
    with pytest.raises(UsageError, match="--reps 0"):
        LadderPlan("m", reps=0).checked()


def synthetic_result(rows: list[LadderRow] | None = None) -> LadderResult:
    rows = rows if rows is not None else rows_at(8192, 16)
    return LadderResult(source="qwen2.5-coder:7b-instruct", source_type="F16", reference="qwen:f16",
                        reference_sha256="0" * 64, reference_note="original float weights", task="chat", ctx=8192,
                        suite="full", ram_budget_bytes=16 * GIB, types=list(FIGURES), rows=rows, picks=choose(rows),
                        rules=rules_text(LadderPlan("m", ctx=8192, ram_bytes=16 * GIB)),
                        how={"memory": "variantlab fit MODEL --ctx 8192"}, run_id=1, created_at="2026-11-23",
                        machine={"cpu": "Test CPU <script>", "physical_cores": 2, "ram_total_bytes": 24 * GIB, "gpus": []})


def render_in_chromium(page: Path) -> dict[str, Any]:
    """Open the page in Debian's headless Chromium (no network) and read what it shows."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1300,2400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(page.resolve().as_uri())
        return driver.execute_script("""
            const img = document.getElementById('pareto-chart');
            const rows = [...document.querySelectorAll('#variation-table tbody tr')].map(
                tr => [...tr.cells].map(td => td.innerText));
            const box = img.getBoundingClientRect();
            return {rows: rows, headers: [...document.querySelectorAll('#variation-table th')].map(th => th.innerText),
                    img_complete: img.complete, img_width: img.naturalWidth, img_height: img.naturalHeight,
                    shown_width: box.width, picks: document.getElementById('picks').innerText,
                    machine: document.getElementById('machine').innerText,
                    external: [...document.querySelectorAll('[src],[href]')].map(e => e.src || e.href)
                                .filter(u => !u.startsWith('data:'))};""")
    finally:
        driver.quit()


needs_chromium = pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                                    reason="Debian's chromium and chromium-driver are installed by `make test`")


@needs_chromium
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    result = synthetic_result()
    page, png = write_report(result, tmp_path / "out" / "report.html")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = render_in_chromium(page)
    assert [r[0] for r in shown["rows"]] == list(FIGURES)
    assert shown["headers"][0] == "type" and "pass@1" in " ".join(shown["headers"])
    assert shown["img_complete"] and shown["img_width"] > 800 and shown["img_height"] > 300 and shown["shown_width"] > 300
    assert "balanced" in shown["picks"] and "Test CPU <script>" in shown["machine"]  # escaped, shown as text
    assert shown["external"] == []  # self-contained: nothing to fetch


def test_a_resumed_ladder_reuses_only_comparable_runs(tmp_path: Path) -> None:
    """Issue 16, defect 1: a run measured with another engine build, other hardware or another suite
    version is measured again; one made under today's conditions with the same settings is reused."""
    from dataclasses import replace

    from variantlab.hardware import machine_facts
    from variantlab.ladder import conditions_now, find_run
    from variantlab.results import Metric, ResultsDB, Run

    now = conditions_now("humaneval-1", "d" * 64)
    settings = {"n_threads": 2, "n_ctx": 4096, "subset": "quick"}

    def eval_run(**over: Any) -> Run:
        base = Run(kind="eval", model="m", backend="llama.cpp", settings=dict(settings),
                   variantlab_version="0.1.0", model_sha256="a" * 64, suite="humaneval",
                   metrics={"passed": Metric.of("passed", [3], "samples")}, **now)
        return replace(base, **over)

    with ResultsDB(tmp_path / "r.sqlite") as db:
        db.record(eval_run(engine_version="llama-cpp-python 0.3.2 | CPU : AVX2 = 1 |"))  # before an upgrade
        db.record(eval_run(hardware={**machine_facts(), "cpu": "another CPU"}))
        db.record(eval_run(suite_version="humaneval-0"))
        db.record(eval_run(settings={**settings, "n_threads": 1}))
        assert find_run(db, "eval", "a" * 64, "humaneval", settings, now) is None
        current = db.record(eval_run())
        found = find_run(db, "eval", "a" * 64, "humaneval", settings, now)
        assert found is not None and found.id == current
        assert find_run(db, "eval", "a" * 64, "humaneval", settings, {**now, "dataset_sha256": "e" * 64}) is None


def test_a_gpus_free_memory_does_not_make_runs_incomparable() -> None:
    from variantlab.results import Run

    gpu = {"name": "H200", "total_bytes": 141 << 30}
    runs = [Run(kind="bench", model="m", backend="llama.cpp", settings={}, variantlab_version="0.1.0",
                hardware={"cpu": "x", "gpus": [{**gpu, "free_bytes": free}]}) for free in (100 << 30, 90 << 30)]
    assert runs[0].comparable_key() == runs[1].comparable_key()
    other = Run(kind="bench", model="m", backend="llama.cpp", settings={}, variantlab_version="0.1.0",
                hardware={"cpu": "x", "gpus": [{**gpu, "total_bytes": 80 << 30, "free_bytes": 1}]})
    assert other.comparable_key() != runs[0].comparable_key()


def _with_speed_ranges(rows: list[LadderRow], ranges: dict[str, tuple[float, float, float]]) -> list[LadderRow]:
    """Rows whose generation speed is (median, min, max) over 3 repetitions for the named rungs."""
    out = []
    for r in rows:
        median, low, high = ranges.get(r.file_type, (r.gen_tokens_per_s or 0.0,) * 3)
        out.append(replace(r, gen_tokens_per_s=median, gen_tokens_per_s_min=low, gen_tokens_per_s_max=high,
                           gen_tokens_per_s_reps=3))
    return out


def test_fastest_treats_rungs_the_noise_cannot_separate_as_tied() -> None:
    """Issue 16, defect 2: Q2_K and Q3_K_S measured 58.6 and 69.0 tokens/s with overlapping repetitions, and
    Q3_K_S was named fastest. Overlapping ranges are a tie, the tie goes to the least memory, and the reason says so."""
    noisy = _with_speed_ranges(rows_at(4096, 24), {"Q2_K": (58.6, 50.2, 70.3), "Q3_K_M": (69.0, 57.0, 71.8)})
    picks = choose(noisy)
    assert picks["fastest"].file_type == "Q2_K"  # the smaller of the tied rungs
    assert set(picks["fastest"].tied) == {"Q2_K", "Q3_K_M"}
    assert "too few repetitions to separate them" in picks["fastest"].reason
    clear = _with_speed_ranges(rows_at(4096, 24), {"Q2_K": (58.6, 58.0, 59.1), "Q3_K_M": (69.0, 68.5, 69.9)})
    picks = choose(clear)
    assert picks["fastest"].file_type == "Q3_K_M" and picks["fastest"].tied == ["Q3_K_M"]
    assert "clear of every other rung's range" in picks["fastest"].reason
    one_rep = [replace(r, gen_tokens_per_s_reps=1) for r in _with_speed_ranges(rows_at(4096, 24), {
        "Q2_K": (2.62, 2.62, 2.62), "Q4_K_S": (2.66, 2.66, 2.66)})]  # the 13B twin ladder's --reps 1 figures
    reason = choose(one_rep)["fastest"].reason
    assert "over one rep, which has no range" in reason and "clear of" not in reason


def test_the_table_shows_the_spread_of_speed() -> None:
    from variantlab.report import TABLE_HEADERS, table_rows

    rows = _with_speed_ranges(rows_at(4096, 24), {"Q2_K": (58.6, 50.2, 70.3)})
    column = TABLE_HEADERS.index("gen tok/s (range)")
    assert table_rows(synthetic_result(rows))[0][column] == "58.6 (50.2–70.3)"
    recorded_before = [{k: v for k, v in asdict(r).items() if not k.startswith("gen_tokens_per_s_")} for r in rows]
    old = [LadderRow.from_dict(r) for r in recorded_before]  # ladders recorded before the range was kept
    assert table_rows(synthetic_result(old))[0][column] == "58.6"
    # the 34B twin ladder's --reps 1 speeds: one decimal printed both rungs as "1.0 (1.0–1.0)"
    slow = [replace(r, gen_tokens_per_s_reps=1) for r in _with_speed_ranges(rows_at(4096, 24), {
        "Q3_K_M": (0.9751, 0.9751, 0.9751), "Q4_K_M": (0.9816, 0.9816, 0.9816)})]
    cells = {r.file_type: c[column] for r, c in zip(slow, table_rows(synthetic_result(slow)))}
    assert cells["Q3_K_M"] == "0.975 (one rep)" and cells["Q4_K_M"] == "0.982 (one rep)"


def test_rates_keep_three_significant_figures() -> None:
    from variantlab.text import rate

    assert [rate(x) for x in (0.9751, 2.2317, 35.31, 135.6, None)] == ["0.975", "2.23", "35.3", "136", "–"]


def test_a_ladder_result_round_trips_through_the_results_database(tmp_path: Path) -> None:
    """The report reads the ladder back from the database: the typed result survives the JSON."""
    from variantlab.ladder import latest_ladder
    from variantlab.results import ResultsDB, Run

    result = synthetic_result(_with_speed_ranges(rows_at(4096, 24), {"Q2_K": (58.6, 50.2, 70.3)}))
    with ResultsDB(tmp_path / "r.sqlite") as db:
        run_id = db.record(Run(kind="ladder", model="m", backend="llama.cpp", settings=result.to_dict(), hardware={},
                               variantlab_version="0.1.0"))
        back = latest_ladder(db)
    assert back.run_id == run_id and back.rows == result.rows and back.picks == result.picks
    assert back.to_dict() | {"run_id": None, "created_at": None} == result.to_dict() | {"run_id": None, "created_at": None}


def test_suites_and_tasks_come_from_the_data_files() -> None:
    """Issue 16, defect 3: one source of truth, the data files, for the ladder's suites and tasks."""
    from variantlab.knowledge import load_data

    for suite in [s for s in load_data("ladder.toml")["suite"] if s != "repo"]:
        assert LadderPlan("m", suite=suite).checked().suite == suite
    for task in load_data("tasks.toml")["tasks"]:
        assert LadderPlan("m", task=task).checked().task == task
    with pytest.raises(UsageError, match="use one of chat, complete, infill, python|use one of complete"):
        LadderPlan("m", task="poetry").checked()


def _twin_rows(ram_gib: float) -> list[LadderRow]:
    rows = []
    for ftype, (speed, _acc, _kld) in FIGURES.items():
        variant = find_variant(f"qwen2.5-coder:7b-instruct-{ftype.lower()}")
        est = estimate(network_from_catalog(variant), FitRequest(ctx=4096, ram_bytes=int(ram_gib * GIB)))
        rows.append(LadderRow(file_type=ftype, model=f"twin:{variant.tag}", memory_bytes=est.total_bytes, fits=est.fits,
                              file_bytes=est.file_bytes, gen_tokens_per_s=speed if est.fits else None, pass_at_1=None,
                              pass_at_1_low=0.0, pass_at_1_high=1.0, mean_kld=None, passed=0, problems=0, twin=True,
                              verdict=est.verdict, peak_rss_bytes=est.total_bytes if est.fits else None, depth=3584,
                              gen_tokens_per_s_at_depth=speed / 2 if est.fits else None,
                              accuracy_note="not measured: twin"))
    return rows


def test_twin_picks_use_speed_and_bits_never_accuracy() -> None:
    from variantlab.ladder import choose_twins

    picks = choose_twins(_twin_rows(24))
    assert picks["fastest"].file_type == "Q2_K"  # measured fastest, clear of the others
    assert picks["best quality"].file_type == "Q8_0"  # the most bits that fit
    assert picks["balanced"].file_type == "Q4_K_M"  # the least memory at or above the recommended level
    tight = choose_twins(_twin_rows(4.5))  # only the lower rungs fit
    assert tight["best quality"].file_type not in ("Q8_0", "Q6_K") and tight["best quality"].file_type is not None


def test_twin_table_shows_refusals_and_no_accuracy(tmp_path: Path) -> None:
    from variantlab.ladder import choose_twins
    from variantlab.report import TWIN_TABLE_HEADERS, twin_table_rows

    rows = _twin_rows(6)
    result = replace(synthetic_result(rows), twin=True, picks=choose_twins(rows))
    cells = twin_table_rows(result)
    assert all(len(c) == len(TWIN_TABLE_HEADERS) for c in cells)
    refused = [c for c, r in zip(cells, rows) if not r.fits]
    assert refused and all(c[4].startswith("refused by fit") for c in refused)
    assert all(c[TWIN_TABLE_HEADERS.index("accuracy")] == "not measured: twin" for c, r in zip(cells, rows) if r.fits)
    page, png = write_report(result, tmp_path / "twins.html")
    assert "measured GiB at ctx" in page.read_text() and png.stat().st_size > 1000
