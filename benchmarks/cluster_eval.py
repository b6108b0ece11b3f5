"""Greedy HumanEval of the default model: the local path against the cluster path (issue 23, acceptance 5).

Per round, interleaved, each run from a fresh home (nothing reused) with the model registered in place:
  local      `variantlab eval MODEL --threads 1`, pinned to CPU 0 (taskset), outside any cluster;
  1 node     the same through `--cluster auto` on a one-node Ray cluster of 1 CPU (pinned to CPU 0);
  2 nodes    the same on a two-node cluster, 1 CPU each (CPU 0 and CPU 1).
The clusters run in a private network namespace (tests/ray_cluster.py) and are started before the
timer; the time of a cluster run includes shipping the model to each node and checking its hash.
Prints wall-clock seconds per run, the ratios 2 nodes / 1 node and 1 node / local, and whether the
per-task outcomes of all three agree: passed or not, and (stronger) the number of tokens generated
and why generation stopped, which differ when a greedy token flipped even if the verdict did not.

    python benchmarks/cluster_eval.py [--limit N] [--rounds R] [MODEL]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.ray_cluster import namespaced_cluster  # noqa: E402

from variantlab import config  # noqa: E402
from variantlab.store import Store, fetch  # noqa: E402


def fresh_home(model: str) -> Path:
    home = Path(tempfile.mkdtemp(prefix="vlbench-"))
    fetch(f"file:{Store(config.home()).resolve(model).path}", store=Store(home), name=model, link=True)
    return home


def local_run(model: str, limit: list[str]) -> tuple[float, dict]:  # type: ignore[type-arg]
    home = fresh_home(model)
    t0 = time.perf_counter()
    done = subprocess.run(["taskset", "-c", "0", sys.executable, "-m", "variantlab.cli.app", "eval", model, "--threads", "1",
                           *limit, "--json"], capture_output=True, text=True, env={**os.environ, "VARIANTLAB_HOME": str(home)})
    wall = time.perf_counter() - t0
    shutil.rmtree(home, ignore_errors=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return wall, json.loads(done.stdout)


def cluster_run(model: str, limit: list[str], nodes: int) -> tuple[float, dict]:  # type: ignore[type-arg]
    home = fresh_home(model)
    with namespaced_cluster([1] * nodes, pins=[str(i) for i in range(nodes)]) as cluster:
        t0 = time.perf_counter()
        done = cluster.run(["variantlab", "eval", model, *limit, "--json", "--cluster", "auto"], home, timeout=7200)
        wall = time.perf_counter() - t0
    shutil.rmtree(home, ignore_errors=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return wall, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default="qwen2.5-coder-0.5b-instruct:q4_k_m")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    limit = ["--limit", str(args.limit)] if args.limit else []
    walls: dict[str, list[float]] = {"local": [], "1 node": [], "2 nodes": []}
    outcomes: dict[str, dict[str, tuple[bool, int, str]]] = {}
    for r in range(args.rounds):
        for name, run in (("local", lambda: local_run(args.model, limit)), ("1 node", lambda: cluster_run(args.model, limit, 1)),
                          ("2 nodes", lambda: cluster_run(args.model, limit, 2))):
            wall, report = run()
            walls[name].append(wall)
            outcomes[name] = {t: (v["passed"], v["tokens"], v["finish"]) for t, v in report["per_task"].items()}
            print(f"round {r + 1} {name}: {wall:.1f} s, pass@1 {report['pass@1']:.3f} "
                  f"({report['passed']}/{report['samples']})", flush=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    print(f"\nmedian wall s: local {med['local']:.1f}, 1 node {med['1 node']:.1f}, 2 nodes {med['2 nodes']:.1f}")
    print(f"2 nodes / 1 node: {med['2 nodes'] / med['1 node']:.3f} (goal <= 0.6)")
    print(f"1 node (cluster path) / local: {med['1 node'] / med['local']:.3f} (goal <= 1.10)")
    verdicts = [{t: o[0] for t, o in outcomes[k].items()} for k in walls]
    print(f"per-task verdicts identical across the three: {verdicts[0] == verdicts[1] == verdicts[2]}")
    print(f"per-task (verdict, tokens, finish) identical: {outcomes['local'] == outcomes['1 node'] == outcomes['2 nodes']}")
    for name in ("1 node", "2 nodes"):
        differ = sorted(t for t in outcomes["local"].keys() | outcomes[name].keys()
                        if outcomes["local"].get(t) != outcomes[name].get(t))
        local, there = outcomes["local"], outcomes[name]
        listed = ", ".join(f"{t}: {local.get(t)} -> {there.get(t)}" for t in differ)
        print(f"tasks whose outcome differs, local against {name}: {len(differ)}" + (f" ({listed})" if differ else ""))


if __name__ == "__main__":
    main()
