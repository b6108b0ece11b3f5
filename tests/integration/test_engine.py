"""The engine on a real model (SmolLM2-135M): generation, batching, stop strings, crashes, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_gguf import write_tiny_model
from variantlab.engine import EngineCrashed, EngineError, EngineProcess, EngineSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine(smol_model: str):  # type: ignore[no-untyped-def]
    with EngineProcess(smol_model, EngineSettings(n_ctx=1024, n_seq_max=3)) as e:
        yield e


def test_greedy_generation_is_deterministic_and_bounded(engine) -> None:  # type: ignore[no-untyped-def]
    prompt = engine.call("tokenize", text="The capital of France is")
    first = engine.call("generate", prompt=prompt, max_tokens=12)
    again = engine.call("generate", prompt=prompt, max_tokens=12)
    assert first["tokens"] == again["tokens"]
    assert len(first["tokens"]) <= 12 and first["finish_reason"] in ("length", "end")
    assert "Paris" in first["text"]
    assert first["prompt_tokens"] == len(prompt) and first["gen_s"] > 0


def test_batched_sequences_match_single_ones(engine) -> None:  # type: ignore[no-untyped-def]
    prompts = [engine.call("tokenize", text=t) for t in ("def add(a, b):", "1, 2, 3, 4,", "Once upon a time")]
    singles = [engine.call("generate", prompt=p, max_tokens=16)["tokens"] for p in prompts]
    batched = [g["tokens"] for g in engine.call("generate_batch", prompts=prompts, max_tokens=16)]
    assert batched == singles


def test_sequences_moved_to_lower_slots_continue_unchanged(smol_model: str) -> None:
    """The first prompt stops at once, so the batch has a gap and the later sequences are moved
    down a slot (their KV copied between streams): their output must not change."""
    with EngineProcess(smol_model, EngineSettings(n_ctx=4 * 256, n_seq_max=4)) as e:
        prompts = [e.call("tokenize", text=t) for t in ("The capital of France is", "Once upon a time", "def add(a, b):")]
        many = e.call("generate_many", prompts=prompts, max_tokens=40, stop=["."])
        singles = [e.call("generate", prompt=p, max_tokens=40, stop=["."]) for p in prompts]
    assert [len(g["tokens"]) for g in many][0] < min(len(g["tokens"]) for g in many[1:])  # a gap opened
    assert [g["tokens"] for g in many] == [g["tokens"] for g in singles]


def test_stop_string_cuts_the_text(engine) -> None:  # type: ignore[no-untyped-def]
    prompt = engine.call("tokenize", text="1, 2, 3, 4,")
    free = engine.call("generate", prompt=prompt, max_tokens=20)["text"]
    assert " 7," in free  # the model counts on
    cut = engine.call("generate", prompt=prompt, max_tokens=20, stop=[" 7"])
    assert cut["finish_reason"] == "stop" and cut["text"] == free[: free.index(" 7")]


def test_sampling_with_a_seed_is_reproducible(engine) -> None:  # type: ignore[no-untyped-def]
    prompt = engine.call("tokenize", text="Write a word:")
    sampling = {"temperature": 0.9, "seed": 7}
    a = engine.call("generate", prompt=prompt, max_tokens=10, sampling=sampling)
    b = engine.call("generate", prompt=prompt, max_tokens=10, sampling=sampling)
    assert a["tokens"] == b["tokens"]


def test_overfull_context_is_an_engine_error(engine) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EngineError, match="do not fit a context of 1024"):
        engine.call("generate", prompt=[1] * 1000, max_tokens=100)


def test_a_crash_in_the_child_does_not_take_the_tool_down(smol_model: str) -> None:
    with EngineProcess(smol_model, EngineSettings(n_ctx=256)) as e:
        with pytest.raises(EngineCrashed, match="signal 11"):
            e.call("crash")
    with EngineProcess(smol_model, EngineSettings(n_ctx=256)) as e:  # and the next one works
        assert e.call("tokenize", text="hi")


def test_llama_cpp_refusal_carries_its_reason(tmp_path: Path) -> None:
    odd = write_tiny_model(tmp_path / "odd.gguf", arch="notanarch")
    with pytest.raises(EngineError, match="unknown model architecture: 'notanarch'"):
        with EngineProcess(str(odd), EngineSettings(n_ctx=256)):
            pass
