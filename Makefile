# Two commands on a fresh machine: `make bench` (the main job on the embedded default) and `make test`.
# TORCH= (empty) keeps a torch you already have, e.g. a CUDA build: make bench TORCH= VENV_FLAGS=--system-site-packages
PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= results/make-bench-$(shell date +%Y%m%d-%H%M%S)
# The validation-tuned comparison (README "The comparison"): the settings every method shares beside its tuned values
# (the --set values bench.tune was given; results/tuned/shape-aesthetic-val.md has the tuning command).
TUNED ?= results/tuned/shape-aesthetic-val.json
# (bench.run refuses a --set naming a method outside --methods, so the sets go per method.)
SHARED_SETS = --set steps=10
DDPO_SETS = --set ddpo.batch_size=32 --set ddpo.per_prompt_stat_tracking=true --set ddpo.stat_buffer_size=32
GRPO_SETS = --set grpo.batch_size=32 --set grpo.group_size=8
# grpo-kl is grpo with Flow-GRPO's KL (beta 0.04): it takes grpo's tuned values (the tuned file names grpo only).
GRPO_KL_SETS = --set grpo-kl.batch_size=32 --set grpo-kl.group_size=8 --set grpo-kl.lr=3e-3 \
	--set grpo-kl.updates_per_batch=1
# The main job: AlignProp, DDPO and RWR at their validation-tuned configurations on shape-aesthetic, 3 evaluation
# seeds, the tuning budget (160 reward queries per run, not wall-clock, so machine load cannot change the result),
# evaluated every 32 queries on the 20 shapes-eval prompts with fixed noise.
BENCH_ARGS ?= --preset default --methods alignprop,ddpo,rwr --reward shape-aesthetic --seeds 0,1,2 \
	--max-samples 160 --max-seconds 36000 --eval-every-samples 32 --eval-n 20 $(SHARED_SETS) $(DDPO_SETS) \
	--config-from $(TUNED) --jobs 2
# The long-budget reference (results/reference/long/): every family at a budget where the policy gradients learn.
LONG_OUT ?= results/bench-long-$(shell date +%Y%m%d-%H%M%S)
LONG_ARGS ?= --preset default --methods alignprop,draft-lv,refl,ddpo,grpo,grpo-kl,rwr --reward shape-aesthetic \
	--seeds 0,1,2 --max-samples 768 --max-seconds 36000 --eval-every-samples 64 --eval-n 20 \
	$(SHARED_SETS) $(DDPO_SETS) $(GRPO_SETS) $(GRPO_KL_SETS) --config-from $(TUNED) --jobs 2

# The flow comparison (README "tiny-shapes-flow"): the backprop methods and RWR on the SD3-architecture shape world,
# validation-tuned on it, under make bench's budget rules.
FLOW_OUT ?= results/bench-flow-$(shell date +%Y%m%d-%H%M%S)
FLOW_ARGS ?= --preset default --model tiny-shapes-flow --methods alignprop,draft-lv,refl,rwr --reward shape-aesthetic \
	--seeds 0,1,2 --max-samples 160 --max-seconds 36000 --eval-every-samples 32 --eval-n 20 $(SHARED_SETS) \
	--config-from results/tuned/flow-shape-aesthetic-val.json --jobs 2

# The flow-family comparison (docs/benchmarks.md "Reward backprop against the flow policy gradients"): the backprop
# methods, the four flow policy gradients at their authors' loop structure (issue 34) and RWR on tiny-shapes-flow at
# 768 reward queries, each validation-tuned with equal effort (3 learning rates x one structural knob of 2 values x 2
# seeds: make tune-flow-pg). Per update: flow-grpo a rollout batch of 8 (2 updates per round of 16, shuffled),
# dance-grpo 8 (2 updates per round, one group each), mixgrpo 2 (a group trained in 4 updates, window moving every 25
# rounds), diffusion-nft 16 (2 batches of 8, one update per round); the knob is the group size (4 or 8) for the
# policy gradients, the truncation for reward backprop (alignprop's K range, draft-lv's draws, refl's stop point),
# the temperature for RWR. diffusion-nft samples and is evaluated CFG-free (its published setting), the others at
# the preset's guidance 2.
FLOW_PG_OUT ?= results/bench-flow-pg-$(shell date +%Y%m%d-%H%M%S)
FLOW_PG_SETS = --set flow-grpo.batch_size=8 --set dance-grpo.batch_size=8 --set mixgrpo.batch_size=2 \
	--set diffusion-nft.batch_size=8 --set diffusion-nft.grad_accum=2
FLOW_PG_METHODS = alignprop,draft-lv,refl,flow-grpo,dance-grpo,mixgrpo,diffusion-nft,rwr
# The grid grew once (bench.tune --resume): the lr of each method whose winner sat on the first grid's edge
# (alignprop at 1e-2; draft-lv, mixgrpo and rwr at 1e-3) got one more value past it; rwr's winner then sat at 3e-4,
# so it got 1e-4 (a second growth).
FLOW_PG_GRID = lr=1e-3,3e-3,1e-2;group_size=4,8;alignprop.k_max=3,0;draft-lv.draws=2,4;refl.stop_from=0.5,0.75;rwr.temperature=0.5,1.0;alignprop.lr=1e-3,3e-3,1e-2,3e-2;draft-lv.lr=3e-4,1e-3,3e-3,1e-2;mixgrpo.lr=3e-4,1e-3,3e-3,1e-2;rwr.lr=1e-4,3e-4,1e-3,3e-3,1e-2
FLOW_PG_TUNED = results/tuned/flow-pg-v2-shape-aesthetic-val.json
FLOW_PG_BUDGET = --preset default --model tiny-shapes-flow --reward shape-aesthetic --max-samples 768 \
	--max-seconds 36000
FLOW_PG_COMMON = $(FLOW_PG_BUDGET) --eval-n 20 $(SHARED_SETS) $(FLOW_PG_SETS)
# The comparison evaluates at log-spaced query counts (8, 12, 16, 24, ... 768: dense where curves move, for point
# speed-ups) on 40 images, 2 per held-out prompt, so that sample diversity is recorded.
FLOW_PG_ARGS ?= --methods $(FLOW_PG_METHODS) $(FLOW_PG_BUDGET) --eval-n 40 $(SHARED_SETS) $(FLOW_PG_SETS) \
	--seeds 0,1,2 --eval-at log --config-from $(FLOW_PG_TUNED) --jobs 2
FLOW_PG_TUNE_OUT ?= results/tune-flow-pg-v2

# The benchmark suite (docs/suite.md): 4 tasks x 2 families x every registered method x 3 seeds at 384 reward queries,
# the learning rate tuned per family on shape-aesthetic's validation prompts; about 7.5 hours on 2 cores. Resumable:
# rerunning make bench-suite continues SUITE_OUT (finished folders are skipped). SUITE_ARGS selects, e.g.
# SUITE_ARGS="--tasks prompt-match --families sd".
SUITE_OUT ?= results/suite
SUITE_ARGS ?=
SUITE_QUICK_OUT ?= results/suite-quick-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install test test-slow bench bench-long bench-flow bench-flow-pg tune-flow-pg bench-suite bench-suite-quick \
	suite-reference \
	clean-venv gpu-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(if $(TORCH),$(BIN)/python -m pip install -q $(TORCH),)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow"

# The heaviest process-level checks (two data-parallel processes, submitit, fault injection, the SD 1.5 shape):
# .ci/run runs them after make test, which stays under 5 minutes from a clean clone.
test-slow: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 --dist load -m slow

bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS) --out $(OUT)
	$(BIN)/python -m bench.report $(OUT)

bench-long: install
	$(BIN)/python -m bench.run $(LONG_ARGS) --out $(LONG_OUT)
	$(BIN)/python -m bench.report $(LONG_OUT)

bench-flow: install
	$(BIN)/python -m bench.run $(FLOW_ARGS) --out $(FLOW_OUT)
	$(BIN)/python -m bench.report $(FLOW_OUT) --reference alignprop

# Resumable: rerunning it continues the tuning in FLOW_PG_TUNE_OUT (finished candidates are reused).
tune-flow-pg: install
	$(BIN)/python -m bench.tune --methods $(FLOW_PG_METHODS) --grid "$(FLOW_PG_GRID)" --seeds 100,101 \
		$(FLOW_PG_COMMON) --eval-every 0 --jobs 2 --out $(FLOW_PG_TUNE_OUT) --write $(FLOW_PG_TUNED) \
		$(if $(wildcard $(FLOW_PG_TUNE_OUT)/tune_command.json),--resume,)

bench-flow-pg: install
	$(BIN)/python -m bench.run $(FLOW_PG_ARGS) --out $(FLOW_PG_OUT)
	$(BIN)/python -m bench.report $(FLOW_PG_OUT) --reference flow-grpo
	$(BIN)/python -m bench.report $(FLOW_PG_OUT) --reference dance-grpo --out $(FLOW_PG_OUT)/report-vs-dance-grpo

bench-suite: install
	$(BIN)/python -m bench.suite $(SUITE_ARGS) --out $(SUITE_OUT) $(if $(wildcard $(SUITE_OUT)/suite.json),--resume,)

# The committed copy of a suite (SUITE_REF, results/reference/suite/): the suite report made from SUITE_OUT, then every
# table and record of SUITE_OUT (json, md, runs.csv, metrics.parquet), without the runs' checkpoints and adapters.
SUITE_REF ?= results/reference/suite
suite-reference: install
	$(BIN)/python -m bench.suite.report $(SUITE_OUT) --out $(SUITE_REF)/report
	cd $(SUITE_OUT) && find . -name runs -type d -prune -o -name report -type d -prune -o -type f \( -name '*.json' \
		-o -name '*.md' -o -name runs.csv -o -name metrics.parquet \) -print | while read -r f; do \
		mkdir -p "$(abspath $(SUITE_REF))/$$(dirname "$$f")" && cp "$$f" "$(abspath $(SUITE_REF))/$$f"; done

# Minutes: 8 reward queries, 2 seeds, one method of each kind per family, no tuning; numbers meaningless.
bench-suite-quick: install
	$(BIN)/python -m bench.suite --quick --out $(SUITE_QUICK_OUT)

clean-venv:
	rm -rf $(VENV)

# The prepared GPU check (README "GPU check"): on a machine with CUDA torch; WHEELS=dir installs the pins offline.
gpu-check:
	$(PYTHON) -m bench.gpu_check $(if $(WHEELS),--wheels $(WHEELS),) $(GPU_CHECK_ARGS)
