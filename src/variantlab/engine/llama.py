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
import dataclasses
import itertools
import random
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import llama_cpp as L

from ..errors import EngineError
from .kv_state import build_state, parse_one_cell
from .lookup import PromptLookup
from .rss import peak_rss_bytes, restart_peak
from .settings import FLASH_ATTN, LOAD_MODES, EngineSettings
from .speculative import DraftModel, PassCost, RunLengths, accept_or_replace, choose_length, draw, target_probabilities

_LOG_LINES: deque[str] = deque(maxlen=200)
_BUFFER_LINES: list[str] = []  # llama.cpp's "... buffer size = N MiB" lines since the last load began
_LOG_CALLBACK: Any = None


def _capture_llama_logs(listener: Callable[[bytes], None] | None = None) -> None:
    """Route llama.cpp's log into a ring buffer, so its reasons can be quoted in errors;
    ``listener`` also sees every line (the quantizer's per-tensor progress)."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None and listener is None:
        return

    @L.llama_log_callback
    def _on_log(level: int, text: bytes, user_data: Any) -> None:
        line = text.decode("utf-8", errors="replace")
        _LOG_LINES.append(line)
        if "buffer size" in line:
            _BUFFER_LINES.append(line)
        if listener is not None:
            listener(text)

    _LOG_CALLBACK = _on_log
    L.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


_BUFFER = re.compile(r"\b(?P<kind>KV|RS|model|compute|output) buffer size =\s+(?P<mib>[\d.]+) MiB")


def allocated_buffers(lines: Iterable[str]) -> dict[str, int]:
    """llama.cpp's own allocation report from its load log: bytes per buffer kind (model
    weights, KV cache, recurrent state, compute, output), summed over devices; the figures
    fit's components are checked against."""
    found: dict[str, int] = {}
    for line in lines:
        for m in _BUFFER.finditer(line):
            found[m["kind"]] = found.get(m["kind"], 0) + round(float(m["mib"]) * (1 << 20))
    return found


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
    # speculation: "lookup" (guesses from the sequence itself, engine/lookup.py) or "draft" (the
    # engine's draft model, engine/speculative.py); greedy output stays the same tokens
    speculate: str = ""
    draft_min: int = 0  # guess at least this many tokens whatever they cost (llama-server's --draft-min); 0: by cost only


@dataclass
class Generation:
    """One finished sequence: tokens, text, why it stopped, and its timings."""

    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"
    prompt_tokens: int = 0
    drafted: int = 0  # speculation: tokens guessed, and how many the model confirmed
    accepted: int = 0
    passes: int = 0  # decode passes that produced this sequence's tokens
    prompt_s: float = 0.0
    first_token_s: float = 0.0
    gen_s: float = 0.0


MAX_GUESS = 16  # the longest guess of a draft model (llama-server's former --draft-max default)
MAX_LOOKUP_GUESS = 48  # the longest copied from an earlier occurrence (llama.cpp's ngram-simple m-gram)

# llama-server's separator of extra context for a model without <|file_sep|> (its bytes, in server-common.cpp)
SNIPPET_SEPARATOR = "\n\n--- snippet ---\n\n"


class _Sequence:
    """The per-sequence state of a running generation.

    Text is decoded incrementally and stop strings are searched only in a short tail, so a
    token costs the same at position 10 and at position 10,000.
    """

    def __init__(self, seq_id: int, prompt: list[int], sampler: Any, stop: list[str], max_tokens: int) -> None:
        self.seq_id = seq_id
        self.prompt = prompt
        self.pos = len(prompt)
        self.sampler = sampler
        self.stop = stop
        self.max_tokens = max_tokens
        self.keep = max((len(s) for s in stop), default=1) - 1  # chars of context a new match can reach back
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.chunks: list[str] = []
        self.tail = ""
        self.result = Generation(prompt_tokens=len(prompt))
        self.done = False
        self.batch_index = -1
        self.lookup: PromptLookup | None = None  # set for sequences that guess from their own history
        self.drafts_with_model = False
        self.draft: list[int] = []
        self.rng: Any = None  # numpy's generator, for sampled sequences that speculate
        # how far guesses run, by kind, with a prior per token: a long n-gram match is nearly always
        # a copy in progress (0.97 did better than 0.9 and 0.99 on HumanEval replies, docs/benchmarks.md)
        self.acceptance = {"lookup": RunLengths(0.97), "draft model": RunLengths(0.7)}
        self.guess_kind = ""
        self.sampling = Sampling()

    @property
    def history(self) -> list[int]:
        return self.prompt + self.result.tokens

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


def _return_freed_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``).

    Loading without mmap reads each repacked tensor through a temporary buffer; once glibc has
    freed one such buffer it raises its mmap threshold, so the next ones come from the heap and
    stay resident after they are freed: 5.8 MiB for Qwen2.5-Coder-0.5B, 10.9 MiB for the 1.5B,
    measured (docs/benchmarks.md). Memory the run never uses again should not count against
    the budget ``fit`` plans for. Elsewhere than glibc there is nothing to do."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


class LlamaEngine:
    """One loaded model and one context."""

    _depth_filled = 0  # tokens of sequence 0 kept by the last depth test (bench -d)
    depth_fill = ""  # how that depth was filled: "decoded" or "written" (cells written as state, for twins)

    def __init__(self, model_path: str, settings: EngineSettings) -> None:
        _capture_llama_logs()
        L.llama_backend_init()
        self.settings = settings = settings.resolved()
        t0 = time.perf_counter()
        _BUFFER_LINES.clear()  # what follows is this load's allocation report
        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = settings.n_gpu_layers
        mparams.load_mode = LOAD_MODES[settings.load_mode]
        self.model = L.llama_model_load_from_file(model_path.encode(), mparams)
        if not self.model:
            raise EngineError(f"llama.cpp could not load {model_path}: {llama_reason()}")
        _return_freed_heap()
        self.n_ctx_train = L.llama_model_n_ctx_train(self.model)
        self.ctx = self._new_context(settings)
        self.load_s = time.perf_counter() - t0
        self.buffers = allocated_buffers(_BUFFER_LINES)
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.batch = L.llama_batch_init(settings.n_batch, 0, settings.n_seq_max)
        self.draft: DraftModel | None = None
        self.pass_cost = PassCost()  # target passes' seconds by size, for choosing guess lengths
        self.peak_floor_bytes = 0  # the peak before a passing buffer was left out of it (rss.restart_peak)
        if settings.draft_model:
            self._load_draft(settings)

    def _load_draft(self, settings: EngineSettings) -> None:
        """The draft model beside the target, with a context like the target's; refused (and both
        freed) when its vocabulary or size makes it useless."""
        t0 = time.perf_counter()
        try:
            draft_engine = LlamaEngine(str(settings.draft_model), dataclasses.replace(settings, draft_model=None))
        except EngineError:
            self.close()
            raise
        try:
            self.draft = DraftModel(draft_engine, self)
        except EngineError:
            draft_engine.close()
            self.close()
            raise
        self.draft_load_s = time.perf_counter() - t0

    def _new_context(self, settings: EngineSettings) -> Any:
        cparams = L.llama_context_default_params()
        cparams.n_ctx = settings.n_ctx
        cparams.n_batch = settings.n_batch
        cparams.n_ubatch = settings.n_ubatch
        cparams.n_seq_max = settings.n_seq_max
        cparams.n_threads = cparams.n_threads_batch = settings.n_threads
        cparams.flash_attn_type = FLASH_ATTN[settings.flash_attn]
        cparams.kv_unified = settings.kv_unified
        # sliding-window layers keep window + micro-batch cells, as llama-server runs them (the C
        # API's default keeps the whole context there: 6x the memory of a Gemma 3 at 32k)
        cparams.swa_full = False
        cparams.no_perf = True
        ctx = L.llama_init_from_model(self.model, cparams)
        if not ctx:
            L.llama_model_free(self.model)
            raise EngineError(f"llama.cpp could not create a context of {settings.n_ctx} tokens: {llama_reason()}")
        return ctx

    def close(self) -> None:
        draft = getattr(self, "draft", None)
        if draft is not None:
            draft.close()
            self.draft = None
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

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        buf = (L.llama_token * (len(data) + 16))()
        n = L.llama_tokenize(self.vocab, data, len(data), buf, len(buf), add_special, parse_special)
        if n < 0:
            buf = (L.llama_token * (-n))()
            n = L.llama_tokenize(self.vocab, data, len(data), buf, len(buf), add_special, parse_special)
        return list(buf[:n])

    def piece(self, token: int, special: bool = False) -> bytes:
        """A token's bytes; with ``special``, control tokens are spelled out (``<|im_end|>``)."""
        buf = ctypes.create_string_buffer(64)
        n = L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def token_text(self, token: int) -> str:
        """A token's text with special tokens spelled out, as chat templates write BOS and EOS."""
        return self.piece(token, special=True).decode("utf-8", "replace")

    def fim_prompt(self, prefix: str, suffix: str, extra: Sequence[tuple[str, str]] = (), repo: str = "myproject",
                   filename: str = "filename", budget: tuple[int, int, int] | None = None) -> list[int]:
        """Prefix-suffix-middle tokens with the vocabulary's own FIM tokens, laid out as llama-server's /infill.

        With repository-level tokens (Qwen2.5-Coder's ``<|repo_name|>`` and ``<|file_sep|>``) the
        repository's name, the neighbouring files (``extra``: path and text) and the current file's
        path come first, as the model's authors describe; code text is never read as special tokens.
        ``budget`` caps the tokens of (prefix, suffix, extra): the prefix keeps its end, the suffix
        its start and the extra files their end, nearest the hole (llama-server trims the same way).
        """
        pre, suf, mid = (L.llama_vocab_fim_pre(self.vocab), L.llama_vocab_fim_suf(self.vocab), L.llama_vocab_fim_mid(self.vocab))
        if min(pre, suf, mid) < 0:
            raise EngineError("this model's vocabulary has no fill-in-the-middle tokens")
        rep, sep = L.llama_vocab_fim_rep(self.vocab), L.llama_vocab_fim_sep(self.vocab)
        head: list[int] = []
        if rep >= 0:
            head += [rep] + self.tokenize(f"{repo}\n", False, False)
        for path, text in extra:
            head += ([sep] + self.tokenize(f"{path}\n", False, False)) if sep >= 0 else self.tokenize(SNIPPET_SEPARATOR, False, False)
            head += self.tokenize(text, False, False)
        if sep >= 0:
            head += [sep] + self.tokenize(f"{filename}\n", False, False)
        before, after = self.tokenize(prefix, False, False), self.tokenize(suffix, False, False)
        if budget is not None:
            before, after, head = before[max(0, len(before) - budget[0]):], after[: budget[1]], head[max(0, len(head) - budget[2]):]
        bos = self.bos()
        return head + ([bos] if bos is not None else []) + [pre] + before + [suf] + after + [mid]

    def repo_level_fim(self) -> bool:
        """Whether the vocabulary has the repository-level FIM tokens (its model was trained with neighbouring files)."""
        return L.llama_vocab_fim_rep(self.vocab) >= 0 and L.llama_vocab_fim_sep(self.vocab) >= 0

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
        self._depth_filled = 0
        if self.draft is not None:
            self.draft.clear()

    def _fill_depth(self, depth: int, synthetic: bool = False) -> None:
        """Sequence 0 holding ``depth`` random tokens and nothing after them (llama-bench's ``-d``).
        The depth is filled once and kept: later tests only cut what they added after it.
        ``synthetic``: the cells are written, not decoded (``_write_depth``), where the cache's
        layout allows; for twins, whose cells hold nothing meaningful either way."""
        if depth and self._depth_filled == depth and L.llama_memory_seq_rm(L.llama_get_memory(self.ctx), 0, depth, -1):
            return  # a recurrent state cannot drop a tail (seq_rm says no): decode the depth again
        self.clear()
        self.depth_fill = "written" if depth and synthetic and self._write_depth(depth) else "decoded"
        if depth and self.depth_fill == "decoded":
            self.decode_prompt(self.random_tokens(depth, seed=-1))
        self._depth_filled = depth

    def _write_depth(self, depth: int) -> bool:
        """Fill sequence 0 with ``depth`` cells by writing its state (engine/kv_state.py): one token
        decoded, its K and V rows repeated. False (cache left empty) where the layout is not the
        plain one. The state buffer, as large as the cache it fills, is left out of the peak memory:
        a decoded depth never needs it."""
        self.decode_prompt(self.random_tokens(1, seed=-1))
        size = L.llama_state_seq_get_size(self.ctx, 0)
        one = (ctypes.c_uint8 * size)()
        written = L.llama_state_seq_get_data(self.ctx, one, size, 0)
        template = parse_one_cell(bytes(one)[:written])
        self.clear()
        if template is None or depth > self.settings.n_ctx // max(1, self.settings.n_seq_max):
            return False
        self.peak_floor_bytes = max(self.peak_floor_bytes, peak_rss_bytes())
        state = build_state(template, depth)
        restored = L.llama_state_seq_set_data(self.ctx, state.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), state.nbytes, 0)
        del state
        _return_freed_heap()
        restart_peak()
        if restored == 0:
            self.clear()
            return False
        return True

    def _decode(self, entries: Iterable[tuple[int, int, int, bool]]) -> None:
        """Decode (token, pos, seq_id, want_logits) entries, at most n_batch per call. Entries are
        read a chunk at a time, so a long prompt passed as a generator never exists as a list of
        tuples (about 130 bytes a token of Python objects: 4 MiB at 32k tokens)."""
        batch = self.batch
        stream = iter(entries)
        while chunk := list(itertools.islice(stream, self.settings.n_batch)):
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
        self._decode((t, start_pos + i, seq_id, i == last) for i, t in enumerate(tokens))
        L.llama_synchronize(self.ctx)

    def decode_one(self, token: int, pos: int, seq_id: int = 0) -> None:
        self._decode([(token, pos, seq_id, True)])
        L.llama_synchronize(self.ctx)

    @contextlib.contextmanager
    def sampler(self, sampling: Sampling) -> Iterator[Any]:
        """A llama.cpp sampler chain for ``sampling``, freed on exit."""
        chain = self._new_sampler(sampling)
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
            seqs = [_Sequence(i, p, samplers.enter_context(self.sampler(sampling)), list(stop or []), max_tokens)
                    for i, p in enumerate(prompts)]
            t0 = time.perf_counter()
            for s in seqs:  # each prompt in its own decode call: its logits are the batch's last
                self.decode_prompt(s.prompt, s.seq_id)
                s.result.prompt_s = time.perf_counter() - t0
                self._accept(s, self.sample(s.sampler, -1))
                s.result.first_token_s = time.perf_counter() - t0
                self._speculate(s, sampling)
            t_gen = time.perf_counter()
            while live := [s for s in seqs if not s.done]:
                self.compact(live)  # a finished sequence's KV is not needed any more
                self.step(live)
        for s in seqs:
            if self.draft is not None:
                self.draft.release(id(s))
            s.result.gen_s = time.perf_counter() - t_gen
            s.finish_text()
        return [s.result for s in seqs]

    def start_sequence(self, slot: int, prompt: list[int], sampling: Sampling, stop: list[str], max_tokens: int,
                       prefix: list[int] | None = None, prefix_seq: int = -1) -> _Sequence:
        """Put ``prompt`` into ``slot``: share the prefix's cache (already decoded into ``prefix_seq``),
        decode the rest, sample its first token. The scheduler's way in (engine/scheduler.py)."""
        t0 = time.perf_counter()
        prefix = prefix or []
        if prefix:
            L.llama_memory_seq_cp(L.llama_get_memory(self.ctx), prefix_seq, slot, -1, -1)  # the prefix sequence holds only the prefix
        rest = prompt[len(prefix):]
        self._decode((t, len(prefix) + i, slot, i == len(rest) - 1) for i, t in enumerate(rest))
        s = _Sequence(slot, prompt, self._new_sampler(sampling), stop, max_tokens)
        s.result.prompt_s = time.perf_counter() - t0
        self._accept(s, self.sample(s.sampler, -1))
        self._speculate(s, sampling)
        return s

    def _speculate(self, s: _Sequence, sampling: Sampling) -> None:
        """Set a sequence asked to speculate up with its guesser: its own history, or the draft model."""
        s.sampling = sampling
        if not sampling.speculate:
            return
        if sampling.speculate not in ("lookup", "draft"):
            raise EngineError(f"unknown speculation {sampling.speculate!r}: use lookup or draft")
        if L.llama_model_is_recurrent(self.model) or L.llama_model_is_hybrid(self.model):
            raise EngineError("this model's recurrent state cannot take back rejected guesses, so it cannot speculate")
        if sampling.speculate == "draft" and self.draft is None:
            raise EngineError("speculation with a draft model needs one loaded beside the target (EngineSettings.draft_model)")
        if sampling.temperature > 0:
            import numpy as np

            s.rng = np.random.default_rng(sampling.seed)
        if sampling.speculate == "lookup":
            s.lookup = PromptLookup(s.history)
        else:
            s.drafts_with_model = True

    def share_prefix(self, tokens: list[int], seq_id: int) -> None:
        """Decode a prefix that later sequences copy (no logits: nothing is sampled from it)."""
        self._decode((t, i, seq_id, False) for i, t in enumerate(tokens))

    def _new_sampler(self, sampling: Sampling) -> Any:
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if sampling.temperature <= 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        else:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(sampling.top_k))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(sampling.top_p, 1))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(sampling.temperature))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(sampling.seed))
        return chain

    def step(self, running: list[_Sequence]) -> None:
        """One pass for each running sequence: one llama_decode call for all, then each samples.

        With a KV stream per sequence, llama.cpp splits a batch into one micro-batch (one pass
        over all the weights) per run of consecutive sequence ids in batch order, so the entries
        go in sequence-id order; ``compact`` keeps the ids free of gaps. A sequence that
        speculates sends its guessed tokens after its last one, in the same pass, and keeps as
        many as the model would have chosen itself (``_verify``).
        """
        if not running:
            return
        running = sorted(running, key=lambda s: s.seq_id)
        self._guess(running)
        entries: list[tuple[int, int, int, bool]] = []
        for s in running:
            s.batch_index = len(entries)
            entries.append((s.result.tokens[-1], s.pos, s.seq_id, True))
            entries += [(t, s.pos + 1 + j, s.seq_id, True) for j, t in enumerate(s.draft)]
        t0 = time.perf_counter()
        self._decode(entries)
        L.llama_synchronize(self.ctx)
        if any(s.lookup is not None or s.drafts_with_model for s in running):
            self.pass_cost.record(len(entries), time.perf_counter() - t0)
        for s in running:
            self._verify(s)

    def _guess(self, running: list[_Sequence]) -> None:
        """Each speculating sequence's guesses for this pass, within its token and cache limits and
        the batch (every entry's logits must come back from one decode call)."""
        room = self.settings.n_ctx if self.settings.kv_unified else self.settings.n_ctx // self.settings.n_seq_max
        spare = self.settings.n_batch - len(running)
        wanted = {}
        for s in running:
            wanted[id(s)] = n = max(0, min(s.max_tokens - len(s.result.tokens) - 1, room - s.pos - 1, spare))
            spare -= n
        draft_s = self.draft.token_s if self.draft is not None else 0.0
        lengths, in_batch, matches = {}, len(running), {}
        for s in running:  # each guess's length against what the batch holds so far
            s.draft, s.guess_kind = [], ""
            if s.lookup is not None:
                matches[id(s)] = found = s.lookup.match()
                if found is None:
                    continue
                s.guess_kind, most, step_s = "lookup", MAX_LOOKUP_GUESS, 0.0
            elif s.drafts_with_model:
                s.guess_kind, most, step_s = "draft model", MAX_GUESS, draft_s
            else:
                continue
            limit = min(wanted[id(s)], most)
            k = choose_length(s.acceptance[s.guess_kind].survival(limit), self.pass_cost, in_batch - 1, step_s, limit)
            lengths[id(s)] = k = max(k, min(s.sampling.draft_min, wanted[id(s)]))
            in_batch += k
        by_model = [s for s in running if s.drafts_with_model and lengths.get(id(s))]
        proposals = self.draft.propose([(id(s), s.history, lengths[id(s)]) for s in by_model]) if by_model and self.draft else {}
        for s in running:
            k = lengths.get(id(s), 0)
            found = matches.get(id(s))
            if s.lookup is not None and k and found is not None:
                s.draft = s.lookup.tokens[found[0]: found[0] + k]
            elif s.drafts_with_model:
                s.draft = proposals.get(id(s), [])

    def _verify(self, s: _Sequence) -> None:
        """Take the model's token after the last one and, while it equals the next guessed token,
        the model's token after that one too; free the cache cells of the guesses it did not take.
        A sampled sequence keeps a guess by the standard acceptance rule instead (speculative.py)."""
        before = len(s.result.tokens)
        matched = self._check_sampled(s) if s.rng is not None else self._check_greedy(s)
        start = s.pos
        s.pos += 1 + matched
        if len(s.draft) > matched:
            L.llama_memory_seq_rm(L.llama_get_memory(self.ctx), s.seq_id, start + 1 + matched, -1)
        s.result.passes += 1
        s.result.drafted += len(s.draft)
        s.result.accepted += matched
        if s.guess_kind:
            s.acceptance[s.guess_kind].record(len(s.draft), matched)
        if s.lookup is not None:
            s.lookup.extend(s.result.tokens[before:])
        elif s.drafts_with_model and self.draft is not None and not s.done:
            self.draft.confirmed(id(s), len(s.history), len(s.draft), matched)

    def _check_greedy(self, s: _Sequence) -> int:
        """Guesses kept while they equal the model's choice (its greedy token at each row)."""
        matched = 0
        while True:
            token = self.sample(s.sampler, s.batch_index + matched)
            self._accept(s, token)
            if s.done or matched >= len(s.draft) or s.draft[matched] != token:
                return matched
            matched += 1

    def _check_sampled(self, s: _Sequence) -> int:
        import numpy as np

        sp = s.sampling
        for j in range(len(s.draft) + 1):
            logits = np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx, s.batch_index + j), shape=(self.n_vocab,))
            p = target_probabilities(logits, sp.temperature, sp.top_k, sp.top_p)
            if j == len(s.draft):
                self._accept(s, draw(p, s.rng))
                return j
            token, kept = accept_or_replace(p, s.draft[j], s.rng)
            self._accept(s, token)
            if not kept:
                return j
            if s.done:
                return j + 1
        return len(s.draft)

    def compact(self, running: list[_Sequence]) -> bool:
        """Move sequences from the highest slots into free lower ones, so that ``running`` holds
        the ids 0..n-1 and a step is one micro-batch. A move copies the sequence's KV stream
        (done by llama.cpp before the next decode) and keeps its sampler and text. Returns
        whether any sequence moved; a caller keyed by slot must then re-key by ``seq_id``."""
        if self.settings.kv_unified:
            return False  # one pool: any set of ids is one micro-batch
        used = {s.seq_id for s in running}
        free = [i for i in range(len(running)) if i not in used]
        movers = sorted((s for s in running if s.seq_id >= len(running)), key=lambda s: s.seq_id)
        memory = L.llama_get_memory(self.ctx)
        for s, slot in zip(movers, free):
            L.llama_memory_seq_rm(memory, slot, -1, -1)
            L.llama_memory_seq_cp(memory, s.seq_id, slot, -1, -1)
            L.llama_memory_seq_rm(memory, s.seq_id, -1, -1)
            s.seq_id = slot
        return bool(movers)

    def release(self, s: _Sequence) -> None:
        """Free a finished (or abandoned) sequence's sampler and its cells of the KV cache."""
        L.llama_sampler_free(s.sampler)
        self.release_slot(s.seq_id)
        if self.draft is not None:
            self.draft.release(id(s))

    def release_slot(self, seq_id: int) -> None:
        """Free a slot's cells of the KV cache (what a request that failed while starting left there)."""
        L.llama_memory_seq_rm(L.llama_get_memory(self.ctx), seq_id, -1, -1)

    def _accept(self, s: _Sequence, token: int) -> None:
        if self.is_end(token):
            s.result.finish_reason = "end"
            s.done = True
            return
        s.append(token, self.piece(token))
        if not s.done and len(s.result.tokens) >= s.max_tokens:
            s.done = True

    # -- token distributions (KL-divergence, perplexity) ---------------------------------

    def score_chunk(self, tokens: list[int], first: int, top_k: int = 0,
                    ref_ids: Any = None) -> dict[str, Any]:
        """Log-probabilities over one chunk, as llama-perplexity scores it: every position from
        ``first`` to the second last predicts the next token. Returns each position's negative
        log-likelihood and top token; with ``top_k`` the k most likely tokens and their
        log-probabilities; with ``ref_ids`` (positions × k) the log-probabilities of those tokens.
        """
        import numpy as np

        n = len(tokens)
        if not 0 <= first < n - 1 or n > self.settings.n_batch:
            raise EngineError(f"cannot score a chunk of {n} tokens from position {first} (batch {self.settings.n_batch})")
        self.clear()
        self._decode((t, i, 0, first <= i < n - 1) for i, t in enumerate(tokens))
        L.llama_synchronize(self.ctx)
        rows = n - 1 - first
        logits = np.ctypeslib.as_array(L.llama_get_logits(self.ctx), shape=(rows, self.n_vocab))
        targets = np.asarray(tokens[first + 1:], dtype=np.int64)
        out: dict[str, Any] = {"nll": np.empty(rows), "argmax": np.empty(rows, dtype=np.int32)}
        if top_k:
            out["top_ids"] = np.empty((rows, top_k), dtype=np.int32)
            out["top_logp"] = np.empty((rows, top_k), dtype=np.float32)
        if ref_ids is not None:
            out["logp_at_ref"] = np.empty(ref_ids.shape, dtype=np.float64)
        for start in range(0, rows, 32):  # 32 rows at a time keeps the float64 copy small
            block = logits[start:start + 32].astype(np.float64)
            block -= block.max(axis=1, keepdims=True)
            block -= np.log(np.exp(block).sum(axis=1, keepdims=True))  # log-softmax
            idx = np.arange(start, start + len(block))
            out["nll"][idx] = -block[idx - start, targets[idx]]
            out["argmax"][idx] = block.argmax(axis=1)
            if top_k:
                part = np.argpartition(-block, top_k, axis=1)[:, :top_k]
                vals = np.take_along_axis(block, part, axis=1)
                order = np.argsort(-vals, axis=1)
                out["top_ids"][idx] = np.take_along_axis(part, order, axis=1)
                out["top_logp"][idx] = np.take_along_axis(vals, order, axis=1)
            if ref_ids is not None:
                out["logp_at_ref"][idx] = np.take_along_axis(block, ref_ids[idx].astype(np.int64), axis=1)
        return out

    # -- benchmark ---------------------------------------------------------------------

    def time_prompt(self, n_prompt: int, seed: int, depth: int = 0, synthetic_depth: bool = False) -> tuple[float, float]:
        """llama-bench's pp test plus the first token: (prompt seconds, time to first token),
        after ``depth`` tokens already in the cache."""
        tokens = self.random_tokens(n_prompt, seed)
        with self.sampler(Sampling()) as sampler:
            self._fill_depth(depth, synthetic_depth)
            t0 = time.perf_counter()
            self.decode_prompt(tokens, start_pos=depth)
            t_prompt = time.perf_counter() - t0
            self.sample(sampler)
            return t_prompt, time.perf_counter() - t0

    def time_generation(self, n_gen: int, depth: int = 0, synthetic_depth: bool = False) -> float:
        """llama-bench's tg test, but each next token is really sampled (greedy) from the logits."""
        with self.sampler(Sampling()) as sampler:
            self._fill_depth(depth, synthetic_depth)
            bos = self.bos()
            token = bos if bos is not None else 0
            t0 = time.perf_counter()
            for pos in range(depth, depth + n_gen):
                self.decode_one(token, pos)
                token = self.sample(sampler)
            return time.perf_counter() - t0
