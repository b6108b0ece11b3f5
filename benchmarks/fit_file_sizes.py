"""Predicted file sizes (catalog architecture + llama.cpp recipe) against real files.

Published sizes: tests/data/codellama-13b-instruct-gguf-sizes.csv (TheBloke's model card);
real files: the Qwen2.5-Coder files in the store, by their exact byte counts.

    .venv/bin/python benchmarks/fit_file_sizes.py
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from variantlab.fit import network_from_catalog
from variantlab.knowledge.catalog import find_variant
from variantlab.store import Store

CSV = Path(__file__).parent.parent / "tests" / "data" / "codellama-13b-instruct-gguf-sizes.csv"
STORE_FILES = {"qwen2.5-coder-0.5b-instruct:q4_k_m": "qwen2.5-coder:0.5b-instruct-q4_K_M",
               "qwen2.5-coder-1.5b-instruct:q4_k_m": "qwen2.5-coder:1.5b-instruct-q4_K_M"}


def main() -> int:
    print("| file | recipe | real size | predicted | difference |")
    print("|---|---|---:|---:|---:|")
    worst = 0.0
    with CSV.open() as fh:
        for row in csv.DictReader(line for line in fh if not line.startswith("#")):
            net = network_from_catalog(find_variant(row["file"]))
            real = float(row["size_gb"]) * 1e9
            worst = max(worst, abs(net.file_bytes - real) / real)
            print(f"| {row['file']} | {net.catalog.model.recipe} | {row['size_gb']} GB (published) | "
                  f"{net.file_bytes / 1e9:.3f} GB | {(net.file_bytes - real) / real:+.2%} |")
    store = Store()
    for name, tag in STORE_FILES.items():
        try:
            real_bytes = store.resolve(name).path.stat().st_size
        except Exception as exc:  # not fetched: say so rather than skip silently
            print(f"| {name} | - | not in the store ({exc}) | - | - |")
            continue
        net = network_from_catalog(find_variant(tag))
        worst = max(worst, abs(net.file_bytes - real_bytes) / real_bytes)
        print(f"| {name} | {net.catalog.model.recipe} | {real_bytes:,} B (file) | {net.file_bytes:,} B | "
              f"{(net.file_bytes - real_bytes) / real_bytes:+.3%} |")
    print(f"\nlargest difference: {worst:.2%}", file=sys.stderr)
    return 0 if worst <= 0.02 else 1


if __name__ == "__main__":
    sys.exit(main())
