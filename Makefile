# `make run`: create .venv, install everything, fetch the default model, run the main job on it:
# the quick quantization ladder (Q2_K … Q8_0 made from an F16 dequantized from the shipped
# Q4_K_M; each rung fitted, benched, scored on HumanEval and KL-divergence), then the report.
# `make test`: the whole test suite (installs first when needed). .ci/run calls it.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VL := $(VENV)/bin/variantlab
DEFAULT_MODEL := qwen2.5-coder-0.5b-instruct:q4_k_m
# llama-cpp-python builds llama.cpp from source; its multimodal library is not needed here.
# Its CPU flags are those of llama.cpp's own tools (benchmarks/llama_cpp_tools.py says why they
# are not -march=native: AMX on these VMs kills a native build).
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF $(shell $(PYTHON) benchmarks/llama_cpp_tools.py cpu-flags)
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: run test check install model browser sandbox llama-server

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --upgrade pip
	$(PY) -m pip install --disable-pip-version-check -e '.[test,cluster]'
	touch $@

install: $(VENV)/.installed

model: install
	$(VL) models fetch $(DEFAULT_MODEL)

run: model sandbox
	$(VL) inspect $(DEFAULT_MODEL)
	$(VL) ladder $(DEFAULT_MODEL) --suite quick --task chat --ctx 8192
	$(VL) report --html variantlab-report.html

# The report test renders the page in Debian's headless Chromium (not on a fresh machine).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	{ export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q chromium chromium-driver >/dev/null || \
	  { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }; }

# The sandbox for generated code needs bubblewrap (user, mount, PID and network namespaces).
sandbox:
	@command -v bwrap >/dev/null || \
	{ export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q bubblewrap >/dev/null || \
	  { apt-get update -q >/dev/null && apt-get install -y -q bubblewrap >/dev/null; }; }

# llama.cpp's own llama-server, built from the source the installed llama-cpp-python vendors
# (about 9 min on 2 cores, once; cached in ~/.cache/variantlab): the real peer of `eval openai:`.
llama-server: install
	@command -v cmake >/dev/null && command -v g++ >/dev/null || \
	{ export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q cmake g++ >/dev/null || \
	  { apt-get update -q >/dev/null && apt-get install -y -q cmake g++ >/dev/null; }; }
	$(PY) benchmarks/llama_cpp_tools.py server

# The code's shape first (a few seconds): lint, types, and the layer contracts in pyproject.toml.
check: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# pytest exits 5 when it selects no test: say so instead of failing obscurely.
test: check model browser sandbox llama-server
	@$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest selected no tests"; exit 0; fi; exit $$rc
