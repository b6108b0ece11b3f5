"""Decoding groups: the batches an eval decodes depend on the selection and --parallel alone, so a
shard made of whole groups (a cluster unit) decodes exactly the batches the local run decodes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from variantlab.eval.run import GROUP_TASKS_PER_SLOT, Task, _batches, decode_groups

STOP_LISTS = (("\ndef ",), ("\nclass ", "\n#"))


def _task(tid: str, stops: tuple[str, ...]) -> Task:
    return Task(tid, stops, to_completion=str, to_program=lambda _: None)  # type: ignore[arg-type,return-value]


def _as_ids(expanded: list[Task], batches: list[list[int]]) -> list[list[str]]:
    return [[expanded[i].task_id for i in batch] for batch in batches]


@given(st.integers(1, 200), st.integers(1, 32))
def test_groups_split_the_selection_once_evenly_and_no_larger_than_two_per_slot(n: int, parallel: int) -> None:
    ids = [f"T/{i}" for i in range(n)]
    groups = decode_groups(ids, parallel)
    assert sorted(t for g in groups for t in g) == sorted(ids)
    sizes = [len(g) for g in groups]
    assert max(sizes) <= GROUP_TASKS_PER_SLOT * parallel and max(sizes) - min(sizes) <= 1
    assert all(list(g) == sorted(g, key=ids.index) for g in groups)  # each in the suite's order


@given(st.integers(1, 80), st.integers(1, 8), st.integers(1, 3), st.data())
def test_a_shard_of_whole_groups_decodes_the_batches_the_whole_run_decodes(n: int, parallel: int, samples: int,
                                                                             data: st.DataObject) -> None:
    ids = [f"T/{i}" for i in range(n)]
    stops = {tid: STOP_LISTS[data.draw(st.integers(0, 1))] for tid in ids}
    groups = decode_groups(ids, parallel)
    whole = [_task(t, stops[t]) for t in ids for _ in range(samples)]
    chosen = data.draw(st.lists(st.sampled_from(groups), min_size=1, unique=True))
    shard_ids = [t for g in chosen for t in g]  # a cluster unit's `only`, in any order of its groups
    shard = [_task(t, stops[t]) for t in shard_ids for _ in range(samples)]
    in_shard = set(shard_ids)
    expected = [b for b in _as_ids(whole, _batches(whole, groups)) if b[0] in in_shard]
    assert sorted(_as_ids(shard, _batches(shard, groups))) == sorted(expected)
    for batch in expected:
        assert len({stops[t] for t in batch}) == 1  # one stop list per generate_many call
