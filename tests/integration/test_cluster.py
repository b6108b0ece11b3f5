"""`--cluster` on a real local Ray cluster: a head and two more nodes of one CPU each, each with a
store of its own, all inside a private network namespace (loopback only) with the driver.

The cluster's answers are compared with the local path's on the same files: the ladder's sizes,
sha256s, pass@1 and KLD; a sharded greedy HumanEval run task by task. A node killed mid-run (its
raylet, by PID) leaves a complete run with nothing missing or twice. Bad input is one line and
exit 2 with nothing recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ray_cluster import NamespacedCluster, namespaced_cluster, namespaces_available
from tests.tiny_gguf import write_tiny_model
from variantlab.results import ResultsDB
from variantlab.store import Store, default_model_name, fetch

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(namespaces_available() is not None, reason=f"no namespaced Ray cluster: {namespaces_available()}")]

SMOL = "smollm2-135m-instruct:q4_1"


def _link(home: Path, real_store: Store, *names: str) -> None:
    """The driver's store: the real models registered in place (no copy), under their own names."""
    for name in names:
        fetch(f"file:{real_store.resolve(name).path}", store=Store(home), name=name, link=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[NamespacedCluster]:
    with namespaced_cluster((1, 1, 1)) as c:
        yield c


@pytest.fixture(scope="module")
def driver_home(tmp_path_factory: pytest.TempPathFactory, real_store: Store, smol_model: str, default_model: str) -> Path:
    home = tmp_path_factory.mktemp("driver")
    _link(home, real_store, SMOL, default_model_name())
    return home


def local(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The local path, outside the namespace, in a home of its own."""
    return subprocess.run([sys.executable, "-m", "variantlab.cli.app", *args], capture_output=True, text=True,
                          env={**os.environ, "VARIANTLAB_HOME": str(home)})


def runs(home: Path) -> list:  # type: ignore[type-arg]
    with ResultsDB(home / "results.sqlite") as db:
        return db.runs(limit=10_000)


def test_cluster_ladder_matches_the_local_ladder_and_names_nodes(cluster: NamespacedCluster, driver_home: Path,
                                                                   tmp_path: Path, real_store: Store) -> None:
    args = ("ladder", SMOL, "--types", "Q4_0,Q8_0", "--suite", "quick", "--json")  # issue 23, acceptance 2
    there = cluster.run(["variantlab", *args, "--cluster", "auto"], driver_home)
    assert there.returncode == 0, there.stderr[-3000:]
    _link(tmp_path, real_store, SMOL)
    here = local(tmp_path, *args)
    assert here.returncode == 0, here.stderr[-3000:]
    remote_rows, local_rows = json.loads(there.stdout)["rows"], json.loads(here.stdout)["rows"]
    assert [r["file_type"] for r in remote_rows] == ["Q4_0", "Q8_0"]
    for there_row, here_row in zip(remote_rows, local_rows):
        figures = ("file_bytes", "sha256", "pass_at_1", "passed", "mean_kld")
        assert [there_row[k] for k in figures] == [here_row[k] for k in figures]
        assert "127.0.0.1" in there_row["node"] and here_row["node"] == ""
    recorded = [run for run in runs(driver_home) if run.kind in ("bench", "eval")]
    assert len(recorded) == 8  # per rung: bench, bench at depth, HumanEval, KLD
    assert all(run.hardware["node"]["ip"] == "127.0.0.1" and run.hardware["node"]["node_id"] for run in recorded)


def test_sharded_greedy_humaneval_matches_the_local_run_task_by_task(cluster: NamespacedCluster, driver_home: Path,
                                                                      tmp_path: Path, real_store: Store) -> None:
    args = ("eval", default_model_name(), "--limit", "12", "--parallel", "2", "--json")  # 3 groups of 4 on 2 slots
    there = cluster.run(["variantlab", *args, "--cluster", "auto"], driver_home)
    assert there.returncode == 0, there.stderr[-3000:]
    _link(tmp_path, real_store, default_model_name())
    here = local(tmp_path, *args)
    assert here.returncode == 0, here.stderr[-3000:]
    remote, mine = json.loads(there.stdout), json.loads(here.stdout)
    assert list(remote["per_task"]) == list(mine["per_task"]) and len(remote["per_task"]) == 12
    assert {t: v["passed"] for t, v in remote["per_task"].items()} == {t: v["passed"] for t, v in mine["per_task"].items()}
    assert remote["pass@1"] == mine["pass@1"]
    merged = [run for run in runs(driver_home) if run.kind == "eval" and run.settings.get("cluster")]
    assert merged and merged[-1].settings["cluster"]["shards"] == 3 and "shard" not in merged[-1].settings


def test_bad_input_is_one_line_exit_2_and_records_nothing(cluster: NamespacedCluster, driver_home: Path, tmp_path: Path) -> None:
    before = len(runs(driver_home))
    unreachable = cluster.run(["variantlab", "eval", SMOL, "--limit", "2", "--cluster", "127.0.0.1:1"], driver_home, timeout=120)
    assert unreachable.returncode == 2 and "cannot join the Ray cluster at '127.0.0.1:1'" in unreachable.stderr
    too_big = cluster.run(["variantlab", "bench", SMOL, "--threads", "4", "--cluster", "auto"], driver_home, timeout=120)
    assert too_big.returncode == 2 and "no node of the cluster has a 'variantlab' slot and 4 CPU(s)" in too_big.stderr
    # a model whose origin is the Hub: each worker fetches it there itself, and from inside this namespace it cannot
    store = Store(driver_home)
    tiny = write_tiny_model(tmp_path / "tiny.gguf")
    with store.staging(".gguf") as staged:
        staged.write_bytes(tiny.read_bytes())
        store.commit(staged, name="hubonly:q4_k_m", source="hf:nobody/nothing/tiny.gguf", file_name="tiny.gguf")
    unfetchable = cluster.run(["variantlab", "bench", "hubonly:q4_k_m", "--reps", "1", "--cluster", "auto"], driver_home, timeout=300)
    assert unfetchable.returncode == 2 and "bench hubonly:q4_k_m failed on 127.0.0.1" in unfetchable.stderr
    for result in (unreachable, too_big, unfetchable):
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert len(runs(driver_home)) == before


def test_a_node_killed_mid_run_leaves_nothing_missing_or_twice(tmp_path: Path, real_store: Store, smol_model: str) -> None:
    driver_home = tmp_path / "driver"
    _link(driver_home, real_store, SMOL)
    with namespaced_cluster((1, 1, 1)) as fresh:
        victim = fresh.nodes[2]
        driver = fresh.popen(["variantlab", "eval", SMOL, "--limit", "18", "--parallel", "2", "--json", "--cluster", "auto"], driver_home,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while not fresh.busy(victim) and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.1)
        assert fresh.busy(victim), "no unit reached the victim node"
        fresh.kill_raylet(victim)
        out, err = driver.communicate(timeout=900)
    assert driver.returncode == 0, err[-3000:]
    report = json.loads(out)
    assert len(report["per_task"]) == 18 and report["samples"] == 18
    units = [run for run in runs(driver_home) if run.kind == "cluster_unit" and run.model.startswith("shard")]
    keys = [u.settings["unit"] for u in units]
    assert len(keys) == len(set(keys))  # no unit recorded twice
    assert len(units) == 5  # one per decoding group: 18 tasks in groups of at most 2 x 2
    shard_tasks = [t for u in units for t in u.settings["result"]["per_task"]]
    assert sorted(shard_tasks) == sorted(report["per_task"])  # each task in exactly one recorded shard


def test_an_interrupted_driver_resumes_without_redoing_finished_units(cluster: NamespacedCluster, driver_home: Path) -> None:
    args = ["variantlab", "eval", SMOL, "--limit", "12", "--parallel", "1", "--json", "--cluster", "auto"]  # 6 groups
    before = {u.settings["unit"] for u in runs(driver_home) if u.kind == "cluster_unit"}
    driver = cluster.popen(args, driver_home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None:  # until the first unit is recorded
        if {u.settings["unit"] for u in runs(driver_home) if u.kind == "cluster_unit"} - before:
            break
        time.sleep(0.2)
    assert driver.poll() is None, "the run ended before it could be interrupted"
    os.killpg(driver.pid, 9)
    driver.wait()
    first = {u.settings["unit"] for u in runs(driver_home) if u.kind == "cluster_unit"} - before
    assert 1 <= len(first) < 6
    again = cluster.run(args, driver_home)
    assert again.returncode == 0, again.stderr[-3000:]
    markers = [u.settings["unit"] for u in runs(driver_home) if u.kind == "cluster_unit"]
    assert len(markers) == len(set(markers)) == len(before) + 6  # the finished ones were not sent again
    assert len(json.loads(again.stdout)["per_task"]) == 12


def test_bench_and_twin_ladder_on_the_cluster_name_their_nodes(cluster: NamespacedCluster, driver_home: Path) -> None:
    bench = cluster.run(["variantlab", "bench", SMOL, SMOL, "--reps", "1", "--prompt", "32", "--gen", "8", "--json",
                         "--cluster", "auto"], driver_home)
    assert bench.returncode == 0, bench.stderr[-3000:]
    results = json.loads(bench.stdout)
    assert len(results) == 2 and all(r["status"] == "ok" and r["gen_tokens_per_s"] > 0 and "127.0.0.1" in r["node"] for r in results)
    assert results[0]["run_id"] != results[1]["run_id"]
    twin = cluster.run(["variantlab", "ladder", "qwen2.5-coder:0.5b-instruct", "--twin", "--types", "Q4_K_M,Q8_0", "--ctx", "1024",
                        "--mem", "0.7", "--json", "--cluster", "auto"], driver_home)
    assert twin.returncode == 0, twin.stderr[-3000:]
    fitting, refused = json.loads(twin.stdout)["rows"]
    assert fitting["fits"] and fitting["gen_tokens_per_s"] > 0 and "127.0.0.1" in fitting["node"]
    assert not refused["fits"] and refused["gen_tokens_per_s"] is None
    recorded = {run.id: run for run in runs(driver_home)}
    assert all(recorded[i].hardware["node"]["ip"] == "127.0.0.1" for i in fitting["runs"].values() if i is not None)
