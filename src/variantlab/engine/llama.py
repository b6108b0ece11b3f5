"""The llama.cpp engine, driven through llama-cpp-python's low-level API.

Runs only inside an engine child process (see ``child.py``): a crash in llama.cpp ends that
process, not the tool. Generation uses the token-level API, so Python adds a constant cost
per token (one batch fill, one sampler call, one piece of text) whatever the output length.
Several sequences can be decoded together in one batch.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import random
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import llama_cpp as L

from ..errors import VariantlabError
from .settings import FLASH_ATTN, LOAD_MODES, EngineSettings

_LOG_LINES: deque[str] = deque(maxlen=200)
_LOG_CALLBACK: Any = None


class EngineError(VariantlabError, RuntimeError):
    """llama.cpp refused a model or failed to decode; the message carries llama.cpp's reason."""


def _capture_llama_logs() -> None:
    """Route llama.cpp's log into a ring buffer, so its reasons can be quoted in errors."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return

    @L.llama_log_callback
    def _on_log(level: int, text: bytes, user_data: Any) -> None:
        _LOG_LINES.append(text.decode("utf-8", errors="replace"))

    _LOG_CALLBACK = _on_log
    L.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


def llama_reason() -> str:
    """The last error-looking lines llama.cpp logged (its own words for a refusal)."""
    joined = "".join(_LOG_LINES)
    lines = [ln.strip() for ln in joined.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() or "failed" in ln.lower() or "invalid" in ln.lower()]
    return "; ".join((errors or lines)[-3:]) or "no reason logged"


@dataclass(frozen=True)
class Sampling:
    """Greedy when temperature is 0; otherwise top-k / top-p / temperature with a seed."""

    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 0.95
    seed: int = 1234


@dataclass
class Generation:
    """One finished sequence: tokens, text, why it stopped, and its timings."""

    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"
    prompt_tokens: int = 0
    prompt_s: float = 0.0
    first_token_s: float = 0.0
    gen_s: float = 0.0


class _Sequence:
    """The per-sequence state of a running generation.

    Text is decoded incrementally and stop strings are searched only in a short tail, so a
    token costs the same at position 10 and at position 10,000.
    """

    def __init__(self, seq_id: int, prompt: list[int], sampler: Any, stop: list[str]) -> None:
        self.seq_id = seq_id
        self.prompt = prompt
        self.pos = len(prompt)
        self.sampler = sampler
        self.stop = stop
        self.keep = max((len(s) for s in stop), default=1) - 1  # chars of context a new match can reach back
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.chunks: list[str] = []
        self.tail = ""
        self.result = Generation(prompt_tokens=len(prompt))
        self.done = False
        self.batch_index = -1

    def append(self, token: int, piece: bytes) -> None:
        """Add a token; finish with "stop" when the text now contains a stop string."""
        self.result.tokens.append(token)
        new = self.decoder.decode(piece)
        if not new:
            return
        self.chunks.append(new)
        if not self.stop:
            return
        self.tail = (self.tail + new)[-(self.keep + len(new)):]
        hits = [self.tail.find(s) for s in self.stop if s in self.tail]
        if hits:
            text = "".join(self.chunks)
            self.result.text = text[: len(text) - len(self.tail) + min(hits)]
            self.result.finish_reason = "stop"
            self.done = True

    def finish_text(self) -> None:
        """The whole text, for a sequence that ended without a stop string."""
        if self.result.finish_reason != "stop":
            self.result.text = "".join(self.chunks) + self.decoder.decode(b"", final=True)


class LlamaEngine:
    """One loaded model and one context."""

    def __init__(self, model_path: str, settings: EngineSettings) -> None:
        _capture_llama_logs()
        L.llama_backend_init()
        self.settings = settings = settings.resolved()
        t0 = time.perf_counter()
        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = settings.n_gpu_layers
        mparams.load_mode = LOAD_MODES[settings.load_mode]
        self.model = L.llama_model_load_from_file(model_path.encode(), mparams)
        if not self.model:
            raise EngineError(f"llama.cpp could not load {model_path}: {llama_reason()}")
        self.n_ctx_train = L.llama_model_n_ctx_train(self.model)
        self.ctx = self._new_context(settings)
        self.load_s = time.perf_counter() - t0
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.batch = L.llama_batch_init(settings.n_batch, 0, settings.n_seq_max)

    def _new_context(self, settings: EngineSettings) -> Any:
        cparams = L.llama_context_default_params()
        cparams.n_ctx = settings.n_ctx
        cparams.n_batch = settings.n_batch
        cparams.n_ubatch = settings.n_ubatch
        cparams.n_seq_max = settings.n_seq_max
        cparams.n_threads = cparams.n_threads_batch = settings.n_threads
        cparams.flash_attn_type = FLASH_ATTN[settings.flash_attn]
        cparams.no_perf = True
        ctx = L.llama_init_from_model(self.model, cparams)
        if not ctx:
            L.llama_model_free(self.model)
            raise EngineError(f"llama.cpp could not create a context of {settings.n_ctx} tokens: {llama_reason()}")
        return ctx

    def close(self) -> None:
        if getattr(self, "batch", None) is not None:
            L.llama_batch_free(self.batch)
            self.batch = None
        if getattr(self, "ctx", None):
            L.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            L.llama_model_free(self.model)
            self.model = None

    # -- tokens ------------------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        buf = (L.llama_token * (len(data) + 16))()
        n = L.llama_tokenize(self.vocab, data, len(data), buf, len(buf), add_special, True)
        if n < 0:
            buf = (L.llama_token * (-n))()
            n = L.llama_tokenize(self.vocab, data, len(data), buf, len(buf), add_special, True)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def bos(self) -> int | None:
        return L.llama_vocab_bos(self.vocab) if L.llama_vocab_get_add_bos(self.vocab) else None

    def random_tokens(self, n: int, seed: int) -> list[int]:
        """``n`` random tokens, BOS first when the model adds one (as llama-bench builds its prompt)."""
        rng = random.Random(seed)
        tokens = [rng.randrange(self.n_vocab) for _ in range(n)]
        bos = self.bos()
        if bos is not None and tokens:
            tokens[0] = bos
        return tokens

    # -- decoding ----------------------------------------------------------------------

    def clear(self) -> None:
        """Forget every sequence in the KV cache."""
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """Decode (token, pos, seq_id, want_logits) entries, at most n_batch per call."""
        batch = self.batch
        for start in range(0, len(entries), self.settings.n_batch):
            chunk = entries[start : start + self.settings.n_batch]
            for i, (token, pos, seq_id, logits) in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq_id
                batch.logits[i] = logits
            batch.n_tokens = len(chunk)
            rc = L.llama_decode(self.ctx, batch)
            if rc != 0:
                raise EngineError(f"llama_decode failed with code {rc} (context full?): {llama_reason()}")

    def decode_prompt(self, tokens: list[int], seq_id: int = 0, start_pos: int = 0) -> None:
        """Process a prompt; logits are kept for its last token only."""
        last = len(tokens) - 1
        self._decode([(t, start_pos + i, seq_id, i == last) for i, t in enumerate(tokens)])
        L.llama_synchronize(self.ctx)

    def decode_one(self, token: int, pos: int, seq_id: int = 0) -> None:
        self._decode([(token, pos, seq_id, True)])
        L.llama_synchronize(self.ctx)

    @contextlib.contextmanager
    def sampler(self, sampling: Sampling) -> Iterator[Any]:
        """A llama.cpp sampler chain for ``sampling``, freed on exit."""
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if sampling.temperature <= 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        else:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(sampling.top_k))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(sampling.top_p, 1))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(sampling.temperature))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(sampling.seed))
        try:
            yield chain
        finally:
            L.llama_sampler_free(chain)

    def sample(self, sampler: Any, batch_index: int = -1) -> int:
        return int(L.llama_sampler_sample(sampler, self.ctx, batch_index))

    def is_end(self, token: int) -> bool:
        return bool(L.llama_vocab_is_eog(self.vocab, token))

    # -- generation --------------------------------------------------------------------

    def generate(self, prompt: list[int], max_tokens: int, stop: list[str] | None = None,
                 sampling: Sampling = Sampling()) -> Generation:
        """One sequence: the batched path with a batch of one."""
        return self.generate_batch([prompt], max_tokens, stop, sampling)[0]

    def generate_batch(self, prompts: list[list[int]], max_tokens: int, stop: list[str] | None = None,
                       sampling: Sampling = Sampling()) -> list[Generation]:
        """Decode several prompts together, one token per live sequence per llama_decode call."""
        if len(prompts) > self.settings.n_seq_max:
            raise EngineError(f"{len(prompts)} sequences but the context was made for {self.settings.n_seq_max}")
        need = sum(len(p) for p in prompts) + len(prompts) * max_tokens
        if need > self.settings.n_ctx:
            raise EngineError(f"{need} tokens of prompts and output do not fit a context of {self.settings.n_ctx}")
        self.clear()
        with contextlib.ExitStack() as samplers:
            seqs = [_Sequence(i, p, samplers.enter_context(self.sampler(sampling)), list(stop or []))
                    for i, p in enumerate(prompts)]
            t0 = time.perf_counter()
            for s in seqs:  # each prompt in its own decode call: its logits are the batch's last
                self.decode_prompt(s.prompt, s.seq_id)
                s.result.prompt_s = time.perf_counter() - t0
                self._accept(s, self.sample(s.sampler, -1), max_tokens)
                s.result.first_token_s = time.perf_counter() - t0
            t_gen = time.perf_counter()
            while live := [s for s in seqs if not s.done]:
                entries = []
                for i, s in enumerate(live):
                    entries.append((s.result.tokens[-1], s.pos, s.seq_id, True))
                    s.batch_index = i
                    s.pos += 1
                self._decode(entries)
                for s in live:
                    self._accept(s, self.sample(s.sampler, s.batch_index), max_tokens)
        for s in seqs:
            s.result.gen_s = time.perf_counter() - t_gen
            s.finish_text()
        return [s.result for s in seqs]

    def _accept(self, s: _Sequence, token: int, max_tokens: int) -> None:
        if self.is_end(token):
            s.result.finish_reason = "end"
            s.done = True
            return
        s.append(token, self.piece(token))
        if not s.done and len(s.result.tokens) >= max_tokens:
            s.done = True

    # -- benchmark ---------------------------------------------------------------------

    def time_prompt(self, n_prompt: int, seed: int) -> tuple[float, float]:
        """llama-bench's pp test plus the first token: (prompt seconds, time to first token)."""
        tokens = self.random_tokens(n_prompt, seed)
        with self.sampler(Sampling()) as sampler:
            self.clear()
            t0 = time.perf_counter()
            self.decode_prompt(tokens)
            t_prompt = time.perf_counter() - t0
            self.sample(sampler)
            return t_prompt, time.perf_counter() - t0

    def time_generation(self, n_gen: int) -> float:
        """llama-bench's tg test, but each next token is really sampled (greedy) from the logits."""
        with self.sampler(Sampling()) as sampler:
            self.clear()
            bos = self.bos()
            token = bos if bos is not None else 0
            t0 = time.perf_counter()
            for pos in range(n_gen):
                self.decode_one(token, pos)
                token = self.sample(sampler)
            return time.perf_counter() - t0
