#!/usr/bin/env bash
# Twin fidelity with full offload on a lent GPU machine (issue 17, acceptance 6), in two steps
# because the real file and the build do not travel in one 64 MiB call:
#   build: the llama.cpp that llama-cpp-python 0.3.36 vendors (stripped source .gpu/a/src.tgz),
#          CUDA for sm_90, only llama-bench; the twin (.gpu/a/twin.gguf.xz, written here by
#          variantlab.twin.make_twin from the real file) unpacked; the real file's first part.
#   bench: the real file's second part; then rounds of llama-bench -ngl 99 -fa 1 pp512/tg128,
#          real, twin, real (odd rounds) or twin, real, real (even rounds), as twin_fidelity.py
#          does on the CPU, with nvidia-smi sampling used GPU memory during each bench.
# Usage: here   bash benchmarks/gpu_twin_fidelity.sh prepare   (writes .gpu/a and .gpu/b; add /.gpu/ to .git/info/exclude)
#        there  bash benchmarks/gpu_twin_fidelity.sh build      (carry .gpu/a)
#        there  bash benchmarks/gpu_twin_fidelity.sh bench [ROUNDS]   (carry .gpu/b, within 30 s, while the machine is warm)
set -euo pipefail
REPO=$(pwd)
W=/tmp/twin-gpu
OUT=${OUT:-/tmp/out}
mkdir -p "$W" "$OUT"
case "$1" in
prepare)
  SRC=~/.cache/variantlab/llama.cpp-0.3.36   # benchmarks/llama_cpp_tools.py unpacks the vendored source there
  mkdir -p .gpu/a .gpu/b
  excludes=()
  for d in docs models media benches tests examples tools/ui tools/server app .git gguf-py pocs skills \
           ggml/src/ggml-{cann,et,hexagon,hip,metal,musa,opencl,openvino,sycl,virtgpu,vulkan,webgpu,zdnn,zendnn,blas,rpc}; do
    excludes+=("--exclude=src/$d")
  done
  tar -C "$SRC" --anchored "${excludes[@]}" -czf .gpu/a/src.tgz src
  .venv/bin/python - <<'PY'
import lzma, shutil
from variantlab.store import Store
from variantlab.twin import make_twin, remove_twin
store = Store()
twin = make_twin("smollm2-135m-instruct:q4_1", store)
with open(store.resolve(twin.name).path, "rb") as src, lzma.open(".gpu/a/twin.gguf.xz", "wb", preset=9) as dst:
    shutil.copyfileobj(src, dst)
remove_twin(twin, store)
PY
  real=$(.venv/bin/python -c "from variantlab.store import Store; print(Store().resolve('smollm2-135m-instruct:q4_1').path)")
  head -c $((50 * 1024 * 1024)) "$real" > .gpu/a/real.part1
  tail -c +$((50 * 1024 * 1024 + 1)) "$real" > .gpu/b/real.part2
  du -sh .gpu/a .gpu/b
  ;;
build)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
  cd "$W"
  tar -xzf "$REPO/.gpu/a/src.tgz"
  python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" "$REPO/.gpu/a/twin.gguf.xz" twin.gguf
  cp "$REPO/.gpu/a/real.part1" .
  cmake -S src -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF > "$OUT/cmake.log" 2>&1 || { tail -40 "$OUT/cmake.log"; exit 1; }
  /usr/bin/time -f "build %e s" cmake --build build --target llama-bench -j "$(nproc)" > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
  tail -1 "$OUT/build.log"
  ls -la build/bin/llama-bench twin.gguf real.part1
  ;;
bench)
  cd "$W"
  cat real.part1 "$REPO/.gpu/b/real.part2" > real.gguf
  sha256sum real.gguf twin.gguf | tee "$OUT/sha256.txt"
  stat -c "%n %s" real.gguf twin.gguf | tee "$OUT/bytes.txt"
  rounds=${2:-3}
  for r in $(seq 1 "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then order="real twin real"; else order="twin real real"; fi
    i=0
    for m in $order; do
      i=$((i + 1))
      nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 > "mem_${r}_${i}.txt" &
      sampler=$!
      ./build/bin/llama-bench -m "$m.gguf" -ngl 99 -fa 1 -p 512 -n 128 -r 5 -o jsonl > "bench_${r}_${i}.jsonl" 2>/dev/null
      kill $sampler; wait $sampler 2>/dev/null || true
      peak=$(sort -n "mem_${r}_${i}.txt" | tail -1)
      python3 - "$r" "$i" "$m" "$peak" "bench_${r}_${i}.jsonl" <<'PY' | tee -a "$OUT/rounds.tsv"
import json, sys
r, i, m, peak, path = sys.argv[1:]
rows = [json.loads(line) for line in open(path) if line.strip()]
pp = next(x["avg_ts"] for x in rows if x["n_prompt"] > 0)
tg = next(x["avg_ts"] for x in rows if x["n_gen"] > 0)
print(f"{r}\t{i}\t{m}\t{pp:.1f}\t{tg:.1f}\t{peak}")
PY
    done
  done
  ;;
esac
