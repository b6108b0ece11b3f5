"""The cluster path's pieces that need no cluster: the missing extra, plans, how a worker takes in a
model (by hash), how a unit is recorded (whole, once) and found again by a resumed driver.
The real cluster is in tests/integration/test_cluster.py."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from variantlab.cluster import UNIT_KIND, ClusterPlan, Shipment, Unit, UnitOutcome, done_units, receive, record_unit, unit_key
from variantlab.errors import IntegrityError, UsageError
from variantlab.files import sha256_file
from variantlab.results import Metric, ResultsDB, Run
from variantlab.store import Store


def test_without_ray_the_flag_says_how_to_install_it(cli: Callable, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError, as without the extra
    for args in (["eval", str(tiny_model), "--cluster", "auto"], ["bench", str(tiny_model), "--cluster", "auto"],
                 ["ladder", str(tiny_model), "--cluster", "auto"]):
        result = cli(*args)
        assert result.code == 2, result
        assert result.err.strip() == ("variantlab: error: --cluster needs Ray, which is not installed "
                                      "(install the extra: pip install 'variantlab[cluster]')")


@pytest.mark.parametrize("plan", [ClusterPlan(address=" "), ClusterPlan(max_retries=-1), ClusterPlan(max_retries=11)])
def test_a_bad_cluster_plan_is_refused(plan: ClusterPlan) -> None:
    with pytest.raises(UsageError):
        plan.checked()


def test_eval_cluster_refuses_suites_it_does_not_shard(cli: Callable, tiny_model: Path) -> None:
    result = cli("eval", str(tiny_model), "--suite", "kld", "--reference", str(tiny_model), "--cluster", "auto")
    assert result.code == 2 and "eval --cluster shards the humaneval and infill suites, not kld" in result.err


def _shipment(path: Path, sha256: str) -> Shipment:
    return Shipment(name="tiny:q4_k_m", sha256=sha256, size=path.stat().st_size, file_name=path.name,
                    source=f"file:{path}", file_type=None, revision=None, lineage=None)


def test_a_worker_takes_a_model_in_only_with_the_sha256_it_was_sent(tiny_model: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "worker")
    with pytest.raises(IntegrityError):
        receive(_shipment(tiny_model, "0" * 64), store)
    assert store.manifest("tiny:q4_k_m") is None
    right = sha256_file(tiny_model)
    got = receive(_shipment(tiny_model, right), store)
    assert got.sha256 == right and store.blob_path(right).is_file()
    assert receive(_shipment(tiny_model, right), store) == got  # already there: checked, not fetched again


def _outcome(n: int) -> UnitOutcome:
    runs = [Run(kind="bench", model="m", backend="llama.cpp", settings={}, hardware={"cpu": "x", "node": {"ip": "127.0.0.1"}},
                variantlab_version="0", metrics={"gen_tokens_per_s": Metric.of("gen_tokens_per_s", [1.0], "tokens/s")},
                id=100 + i) for i in range(n)]
    return UnitOutcome({"ip": "127.0.0.1", "machine": {"cpu": "x", "node": {"ip": "127.0.0.1"}}}, runs, {"answer": 42})


def test_a_unit_is_recorded_whole_with_a_marker_that_names_its_runs(tmp_path: Path) -> None:
    unit = Unit(unit_key("bench", "abc"), "bench m", lambda: None, (), 1)  # type: ignore[arg-type, return-value]
    with ResultsDB(tmp_path / "r.sqlite") as db:
        mapping = record_unit(db, unit, _outcome(2))
        marker = done_units(db)[unit.key]
        assert marker.kind == UNIT_KIND and marker.settings["runs"] == list(mapping.values())
        assert marker.settings["result"] == {"answer": 42}
        assert [db.get(i).hardware["node"]["ip"] for i in mapping.values()] == ["127.0.0.1", "127.0.0.1"]
        broken = _outcome(2)
        broken.runs[1].settings = {"unserialisable": object()}  # the second run fails after the first was written
        with pytest.raises(TypeError):
            record_unit(db, Unit(unit_key("bench", "def"), "bench n", lambda: None, (), 1), broken)  # type: ignore[arg-type, return-value]
        assert len(db.runs(limit=100)) == 3  # the failed unit left neither runs nor a marker


def test_unit_keys_are_stable_and_tell_work_apart() -> None:
    assert unit_key("eval_shard", "sha", {"only": ["HumanEval/0"]}) == unit_key("eval_shard", "sha", {"only": ["HumanEval/0"]})
    assert unit_key("eval_shard", "sha", {"only": ["HumanEval/0"]}) != unit_key("eval_shard", "sha", {"only": ["HumanEval/1"]})


def test_rungs_measured_on_different_machines_say_speed_compares_only_within_one() -> None:
    from variantlab.cluster import _machine_rules
    from variantlab.ladder import LadderRow

    def row(machine: str) -> LadderRow:
        return LadderRow("Q4_0", "m", 1, 1, True, 10.0, 0.5, 0.4, 0.6, 0.01, 1, 2, machine=machine)

    assert _machine_rules([row("AMD EPYC, 2 cores"), row("AMD EPYC, 2 cores")]) == []
    [rule] = _machine_rules([row("AMD EPYC, 2 cores"), row("Apple M2, 8 cores")])
    assert "2 kinds of machine" in rule and "compare speed only between rows of one machine" in rule
