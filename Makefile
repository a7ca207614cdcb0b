# Two entry points for a fresh clone; each creates .venv and installs what it needs.
#   make demo   the whole pipeline on the embedded tiny default (CPU, offline, a few minutes)
#   make test   the test suite
#   make gpu-check  one-call GPU acceptance (needs a CUDA GPU; writes gpu-check.json)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install browser clean gpu-check

install: $(STAMP)

# torch is installed first, pinned exactly: pip then takes the CPU wheel on a CPU machine's disk
# instead of resolving a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/medtune demo
	@echo "clinician review of the demo's answers: $(BIN)/medtune review invite runs/demo --name YOUR_NAME, then $(BIN)/medtune review runs/demo"

# Headless Chromium and a CJK font (Debian packages) for the report and chat-page tests; without Chromium
# they skip, without the font the Chinese report shows boxes and its test of real glyphs fails.
browser:
	@{ command -v chromium >/dev/null 2>&1 && fc-list :lang=zh 2>/dev/null | grep -q .; } || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
	  fonts-noto-cjk) >/dev/null 2>&1; } || \
	  echo "note: chromium or a CJK font is missing; the browser tests skip or fail"

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# On a machine with one CUDA GPU: every GPU-only path (training throughput and MFU on the Qwen3-8B architecture,
# packing and Liger losses, a QLoRA step, vLLM compare and serve) in at most 8 minutes -> gpu-check.json.
# It first installs the gpu and vllm extras; a GPU box without internet needs those wheels carried in
# (PIP_FIND_LINKS=/path/to/wheels) or GPU_CHECK_ARGS=--no-install with them preinstalled.
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py --output gpu-check.json $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
