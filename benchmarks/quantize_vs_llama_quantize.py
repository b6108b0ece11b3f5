"""`variantlab quantize` against llama.cpp's `llama-quantize` on the same source, type and threads.

Both are whole commands timed from the outside, interleaved round by round, the order
swapped every round and the disk synced before each (the output of one, still being written
back, would otherwise slow the next). The machine is noisy: compare ratios measured side by side. variantlab's time includes its start-up, the
plan, the store's sha256 of the output and the registration; llama-quantize's does not hash.
"llama.cpp step" is the time of the quantizer call inside variantlab (its child process
included), without start-up and hashing. The outputs are compared byte for byte (sha256). variantlab runs in a throw-away store that
holds the source, and each output is removed after its round so it is really made again.

    .venv/bin/python benchmarks/quantize_vs_llama_quantize.py [--source NAME] [--types Q4_K_M,Q8_0] [--rounds 3]
                                                             [--imatrix FILE|make] [--json]

The default source is the default model dequantized to F16 (made first if needed). With
``--imatrix`` both quantize with the same importance matrix, given by the same path; ``make``
computes one first with llama.cpp's llama-imatrix on the KL-divergence corpus (8 chunks of 512).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_cpp_tools import ensure_tools  # noqa: E402
from variantlab.engine import default_threads  # noqa: E402
from variantlab.quantize import dequantize  # noqa: E402
from variantlab.store import Store, default_model_name  # noqa: E402

VARIANTLAB = str(Path(sys.executable).with_name("variantlab"))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({out.returncode}): {out.stderr[-500:]}")
    return seconds, out.stdout


def run_variantlab(home: Path, source: str, ftype: str, threads: int, imatrix: list[str]) -> tuple[float, float, Path, str]:
    """The whole command's time, the llama.cpp step's time inside it, the output blob, its name."""
    env = {**os.environ, "VARIANTLAB_HOME": str(home)}
    seconds, stdout = timed([VARIANTLAB, "quantize", source, "--types", ftype, "--threads", str(threads), *imatrix, "--json"], env)
    manifest = json.loads(stdout)["outputs"][0]
    blob = home / "blobs" / "sha256" / manifest["sha256"]
    return seconds, manifest["quantize_s"], blob, manifest["name"]


def make_imatrix(bin_dir: Path, model: Path, out: Path, threads: int) -> Path:
    """An importance matrix of ``model`` from llama-imatrix over the KL-divergence corpus."""
    from variantlab.eval.kld import corpus

    text = out.with_suffix(".txt")
    text.write_text(corpus()[0])
    subprocess.run([str(bin_dir / "llama-imatrix"), "-m", str(model), "-f", str(text), "-o", str(out), "-c", "512",
                    "--chunks", "8", "-t", str(threads)], check=True, capture_output=True)
    return out


def forget(home: Path, blob: Path, name: str) -> None:
    """Remove an output so the next round makes it again (the store would reuse it)."""
    store = Store(home)
    store.manifest_path(name).unlink()
    blob.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=None, help="store name of an F16/F32 model (default: the default model dequantized)")
    parser.add_argument("--types", default="Q2_K,Q4_K_M,Q8_0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--imatrix", default=None, help="an importance matrix .gguf for both, or 'make'")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    source = Store().resolve(args.source or dequantize(default_model_name(), "f16").name)
    binary = ensure_tools() / "llama-quantize"
    threads = default_threads()
    rows = []
    with tempfile.TemporaryDirectory(dir=Store().root) as tmp:
        matrix = args.imatrix
        if matrix == "make":
            matrix = str(make_imatrix(binary.parent, source.path, Path(tmp) / "imatrix.gguf", threads))
        imatrix = ["--imatrix", matrix] if matrix else []
        home = Path(tmp) / "home"
        subprocess.run([VARIANTLAB, "models", "fetch", f"file:{source.path}", "--name", "source"], check=True,
                       capture_output=True, env={**os.environ, "VARIANTLAB_HOME": str(home)})
        subprocess.run([VARIANTLAB, "quantize", "source", "--types", "Q8_0", "--dry-run"], check=True,
                       capture_output=True, env={**os.environ, "VARIANTLAB_HOME": str(home)})  # warm the header cache
        for ftype in [t for t in args.types.split(",") if t]:
            ours, step, theirs, same = [], [], [], []
            for rnd in range(args.rounds):
                out = Path(tmp) / f"llama-quantize.{ftype}.gguf"
                for tool in (("llama-quantize", "variantlab") if rnd % 2 == 0 else ("variantlab", "llama-quantize")):
                    os.sync()  # the previous output's dirty pages are written now, not during the next timing
                    if tool == "llama-quantize":
                        seconds, _ = timed([str(binary), *imatrix, str(source.path), str(out), ftype, str(threads)])
                        theirs.append(seconds)
                    else:
                        seconds, step_s, blob, name = run_variantlab(home, "source", ftype, threads, imatrix)
                        ours.append(seconds)
                        step.append(step_s)
                same.append(sha256(out) == sha256(blob))
                forget(home, blob, name)
                out.unlink()
            rows.append({"type": ftype, "llama_quantize_s": statistics.median(theirs),
                         "variantlab_s": statistics.median(ours),
                         "ratio": statistics.median(o / t for o, t in zip(ours, theirs)),
                         "variantlab_step_s": statistics.median(step),
                         "step_ratio": statistics.median(s / t for s, t in zip(step, theirs)),
                         "byte_identical": all(same), "rounds": args.rounds,
                         "each_llama_quantize_s": theirs, "each_variantlab_s": ours})
    result = {"source": source.label, "threads": threads, "imatrix": matrix, "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"source {source.label}, {threads} threads, median of {args.rounds} interleaved rounds"
          + (f", importance matrix {matrix}" if matrix else ""))
    print(f"{'type':8} {'llama-quantize s':>17} {'variantlab s':>13} {'ratio':>6} {'llama.cpp step s':>17} {'ratio':>6}  byte-identical")
    for r in rows:
        print(f"{r['type']:8} {r['llama_quantize_s']:17.2f} {r['variantlab_s']:13.2f} {r['ratio']:6.3f} "
              f"{r['variantlab_step_s']:17.2f} {r['step_ratio']:6.3f}  {r['byte_identical']}")


if __name__ == "__main__":
    main()
