# Two commands on a fresh machine: `make bench` (the main job on the embedded default) and `make test`.
# TORCH= (empty) keeps a torch you already have, e.g. a CUDA build: make bench TORCH= VENV_FLAGS=--system-site-packages
PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= results/make-bench-$(shell date +%Y%m%d-%H%M%S)
# The main job: three methods, each at its tuned configuration (results/tuned/, made by the bench.tune command in
# the README), on the shape-aesthetic reward, 3 seeds, a budget of 80 reward queries per run (not wall-clock, so
# machine load cannot change the result), evaluated every 20 queries on 30 fixed prompts and noises.
BENCH_ARGS ?= --preset default --methods alignprop,ddpo,rwr --reward shape-aesthetic --seeds 0,1,2 \
	--max-samples 80 --max-seconds 36000 --eval-every-samples 20 --eval-n 30 \
	--config-from results/tuned/shape-aesthetic.json --jobs 2

.PHONY: install test bench clean-venv gpu-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(if $(TORCH),$(BIN)/python -m pip install -q $(TORCH),)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS) --out $(OUT)
	$(BIN)/python -m bench.report $(OUT)

clean-venv:
	rm -rf $(VENV)

# The prepared GPU check (README "GPU check"): on a machine with CUDA torch; WHEELS=dir installs the pins offline.
gpu-check:
	$(PYTHON) -m bench.gpu_check $(if $(WHEELS),--wheels $(WHEELS),) $(GPU_CHECK_ARGS)
