"""Twin cost: writing a catalog variant's twin against `dd` writing the same number of bytes.

Both write to the store's disk and fsync; rounds alternate the order. The twin's peak resident
memory is read from the building process (VmHWM). Each twin is deleted after its round.

    .venv/bin/python benchmarks/twin_cost.py [codellama:13b-instruct-q4_K_M] [--rounds 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from variantlab.store import Store


def twin_round(variant: str) -> tuple[float, int, int]:
    """Build the twin in a fresh process (so its peak memory is its own); seconds, bytes, peak RSS."""
    code = ("import sys,time\nfrom variantlab.twin import make_twin, remove_twin\n"
            "t=time.perf_counter(); tw=make_twin(sys.argv[1]); s=time.perf_counter()-t\n"
            "hwm=[l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
            "remove_twin(tw); print(s, tw.file_bytes, int(hwm)*1024, tw.write_s)")
    out = subprocess.run([sys.executable, "-c", code, variant], capture_output=True, text=True, check=True).stdout.split()
    return float(out[3]), int(out[1]), int(out[2])


def dd_round(n_bytes: int) -> float:
    store = Store()
    store.tmp_dir.mkdir(parents=True, exist_ok=True)
    target = store.tmp_dir / "dd-benchmark.bin"
    mib = n_bytes // (1 << 20)
    t = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={mib}", "conv=fsync", "status=none"], check=True)
    seconds = time.perf_counter() - t
    target.unlink()
    return seconds * n_bytes / (mib << 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", nargs="?", default="codellama:13b-instruct-q4_K_M")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print("| round | twin write s | dd s | ratio | bytes | twin builder peak RSS |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in range(args.rounds):
        if r % 2 == 0:
            twin_s, n_bytes, rss = twin_round(args.variant)
            dd_s = dd_round(n_bytes)
        else:
            dd_s = dd_round(n_bytes)
            twin_s, n_bytes, rss = twin_round(args.variant)
        print(f"| {r + 1} | {twin_s:.1f} | {dd_s:.1f} | {twin_s / dd_s:.2f} | {n_bytes:,} | {rss / 2**20:.0f} MiB |", flush=True)


if __name__ == "__main__":
    main()
