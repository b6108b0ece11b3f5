"""variantlab's KL-divergence against `llama-perplexity --kl-divergence` on the same files.

Same corpus (variantlab's fixed stdlib text, written to a file), same context, same number of
chunks. The reference is the default model dequantized to F16 (`variantlab.quantize.dequantize`);
the compared models are the shipped Q4_K_M and rungs quantized from that F16 with llama.cpp's
quantizer (say so: these rungs come from a reference that was itself a Q4_K_M).
llama-perplexity is built from the llama.cpp source that llama-cpp-python vendors.

    .venv/bin/python benchmarks/kld_vs_llama_perplexity.py [--chunks 20] [--ctx 512] [--types Q2_K,Q3_K_M] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_cpp_tools import ensure_tools  # noqa: E402
from variantlab.engine import default_threads  # noqa: E402
from variantlab.eval.kld import KldPlan, corpus, evaluate_kld  # noqa: E402
from variantlab.quantize import dequantize, quantize  # noqa: E402
from variantlab.results import ResultsDB  # noqa: E402
from variantlab.store import Store, default_model_name  # noqa: E402


def llama_perplexity(binary: Path, model: Path, corpus_file: Path, base: Path, ctx: int, chunks: int,
                     threads: int, make_base: bool) -> dict[str, float]:
    cmd = [str(binary), "-m", str(model), "-f", str(corpus_file), "-c", str(ctx), "--chunks", str(chunks),
           "-t", str(threads), "-b", str(max(ctx, 512)), "--kl-divergence-base", str(base)]
    if not make_base:
        cmd.append("--kl-divergence")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    text = out.stdout + out.stderr
    if make_base:
        return {}
    figures = {}
    for key, pattern in (("mean_kld", r"Mean\s+KLD:\s+([-\d.]+)"), ("ppl", r"Mean PPL\(Q\)\s*:\s*([\d.]+)"),
                         ("ppl_reference", r"Mean PPL\(base\)\s*:\s*([\d.]+)"), ("same_top_p", r"Same top p:\s*([\d.]+)")):
        m = re.search(pattern, text)
        figures[key] = float(m.group(1)) if m else float("nan")
    figures["same_top_p"] /= 100
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--types", default="Q2_K,Q3_K_M")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    store = Store()
    source = default_model_name()
    reference = dequantize(source, "f16", store=store).name  # reused when made before
    models = [source] + [quantize(reference, t, store=store).name for t in args.types.split(",") if t]
    binary = ensure_tools() / "llama-perplexity"
    threads = default_threads()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, ResultsDB(Path(tmp) / "results.sqlite") as db:
        corpus_file = Path(tmp) / "corpus.txt"
        corpus_file.write_text(corpus()[0], encoding="utf-8")
        base = Path(tmp) / "base.kld"
        ref_path = store.resolve(reference).path
        llama_perplexity(binary, ref_path, corpus_file, base, args.ctx, args.chunks, threads, make_base=True)
        for name in models:
            theirs = llama_perplexity(binary, store.resolve(name).path, corpus_file, base, args.ctx, args.chunks, threads, False)
            ours = evaluate_kld(name, reference, KldPlan(n_ctx=args.ctx, max_chunks=args.chunks), store=store, db=db)
            rows.append({"model": name, "variantlab": {k: getattr(ours, k) for k in theirs}, "llama-perplexity": theirs,
                         "kld_ratio": ours.mean_kld / theirs["mean_kld"], "tokens": ours.tokens})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"reference {reference}; ctx {args.ctx}, {args.chunks} chunks, {threads} threads")
    print(f"{'model':45s} {'KLD ours':>10s} {'KLD l-ppl':>10s} {'ratio':>7s} {'PPL ours':>9s} {'PPL l-ppl':>9s} {'top ours':>9s} {'top l-ppl':>9s}")
    for r in rows:
        o, t = r["variantlab"], r["llama-perplexity"]
        print(f"{r['model']:45s} {o['mean_kld']:10.6f} {t['mean_kld']:10.6f} {r['kld_ratio']:7.4f} {o['ppl']:9.4f} "
              f"{t['ppl']:9.4f} {o['same_top_p']:9.4f} {t['same_top_p']:9.4f}")


if __name__ == "__main__":
    main()
