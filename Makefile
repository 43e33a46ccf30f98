# Two commands do everything on a fresh machine:
#   make run    calibrate the embedded default (demo model + its corpus), evaluate, report
#   make test   build and run the whole test suite
SWIFT ?= swift
DEB_PACKAGES := libzstd-dev libsqlite3-dev libopenblas-dev libssl-dev zstd sqlite3

.PHONY: deps build release test run bench bench-avx2 fixtures fuzz clean

# Install the system libraries when missing (root: apt-get; otherwise sudo; neither: a message
# naming the packages, exit 1). See scripts/deps.sh.
deps:
	@sh scripts/deps.sh $(DEB_PACKAGES)

# One optimised build serves both commands: `make run` builds the tool in release (the library has
# testability enabled there, see Package.swift), and `make test` then compiles only the tests on
# top of it and runs them against the same release code that users run (only the kernels target
# is -Ounchecked; the parsers of untrusted files keep Swift's bounds and overflow checks).
RELEASE := $(SWIFT) build -c release
release: deps
	$(RELEASE)

build: release

test: deps
	$(RELEASE) --build-tests
	$(SWIFT) test -c release --skip-build
	bash scripts/c-reader-test.sh

# The embedded default: the trained demonstration model (KJV Mamba-2 with passkey examples,
# training length 128) is calibrated on its Pile-format calibration corpus, θ and p are tuned by
# passkey retrieval at 4× and 8× L, and the winner is evaluated (passkey 1×…16× L, perplexity
# 1×…32× L on held-out text) with dt_thre and with the authors' other modes side by side, reported
# and exported. Outputs in tables/ (git-ignored).
MODEL ?= Fixtures/demo-model
CORPUS ?= Fixtures/demo-corpus/train-sample.jsonl.zst
EVAL_TEXT ?= Fixtures/demo-corpus/eval.txt
INTERVAL ?= 64
MAX_LENGTH ?= 4096
EVAL_LENGTHS ?= 128,256,512,1024,2048,4096
TUNE_LENGTHS ?= 512,1024
TUNE_THETAS ?= 0.01,0.05,0.1,0.3
TUNE_CLAMPS ?= 0.05,0.1,0.2
PASSKEY_LENGTHS ?= 128,256,512,1024,2048
PASSKEY_DEPTHS ?= 0,0.25,0.5,0.75,1
# The authors' other modes, evaluated with the tuned table and θ beside dt_thre.
OTHER_METHODS ?= alpha bound norm channelwise_topk
# The per-layer scale methods (MambaExtend's delta_scale, Mamba Modulation's a_power), calibrated by
# SPSA on the run's corpus at each length the evaluations filter, then evaluated the same way.
SCALE_METHODS ?= delta_scale a_power
SCALE_LENGTHS ?= 256,512,1024,2048,4096
SCALE_SAMPLES ?= 6
SCALE_STEPS ?= 16
NAME := $(notdir $(MODEL))
LM := .build/release/longmamba
TUNE = $(LM) tune --db tables/$(NAME).sqlite --run 1 --model $(MODEL) --task passkey --lengths $(TUNE_LENGTHS) \
	  --depths $(PASSKEY_DEPTHS) --trials 4 --theta $(TUNE_THETAS) --clamp $(TUNE_CLAMPS) --aggregate max
run: release
	mkdir -p tables
	rm -f tables/$(NAME).sqlite tables/$(NAME).sqlite-wal tables/$(NAME).sqlite-shm
	$(LM) calibrate --model $(MODEL) --corpus $(CORPUS) --db tables/$(NAME).sqlite \
	  --samples 5 --interval $(INTERVAL) --max-length $(MAX_LENGTH) --clamp 0.05 --aggregate max
	$(TUNE)
	best="$$($(TUNE) --best 2>/dev/null)"; \
	table="$${best% *}"; theta="$${best#* }"; echo "tuned: table $$table, θ = $$theta"; \
	$(LM) eval --task passkey --model $(MODEL) --db tables/$(NAME).sqlite --table $$table --theta $$theta \
	  --lengths $(PASSKEY_LENGTHS) --depths $(PASSKEY_DEPTHS) --trials 10 --seed 7 \
	  --json tables/$(NAME).passkey.json --svg tables/$(NAME).passkey.svg && \
	$(LM) eval --model $(MODEL) --text $(EVAL_TEXT) --db tables/$(NAME).sqlite --table $$table --theta $$theta \
	  --lengths $(EVAL_LENGTHS) --windows 3 --by-position 128 \
	  --json tables/$(NAME).eval.json --csv tables/$(NAME).eval.csv --svg tables/$(NAME).eval.svg && \
	for m in $(OTHER_METHODS); do \
	  $(LM) eval --task passkey --model $(MODEL) --db tables/$(NAME).sqlite --table $$table --theta $$theta --method $$m --quiet \
	    --lengths $(PASSKEY_LENGTHS) --depths $(PASSKEY_DEPTHS) --trials 10 --seed 7 --json tables/$(NAME).passkey.$$m.json >/dev/null && \
	  $(LM) eval --model $(MODEL) --text $(EVAL_TEXT) --db tables/$(NAME).sqlite --table $$table --theta $$theta --method $$m --quiet \
	    --lengths $(EVAL_LENGTHS) --windows 3 --by-position 128 --json tables/$(NAME).eval.$$m.json >/dev/null || exit 1; \
	  echo "method $$m: tables/$(NAME).{passkey,eval}.$$m.json"; \
	done && \
	for m in $(SCALE_METHODS); do \
	  st="$$($(LM) calibrate-scales --db tables/$(NAME).sqlite --run 1 --model $(MODEL) --corpus $(CORPUS) --method $$m \
	    --lengths $(SCALE_LENGTHS) --samples $(SCALE_SAMPLES) --steps $(SCALE_STEPS) --quiet | sed -n 's/^table \([0-9]*\).*/\1/p')" && \
	  [ -n "$$st" ] && \
	  $(LM) eval --task passkey --model $(MODEL) --db tables/$(NAME).sqlite --table $$st --quiet \
	    --lengths $(PASSKEY_LENGTHS) --depths $(PASSKEY_DEPTHS) --trials 10 --seed 7 --json tables/$(NAME).passkey.$$m.json >/dev/null && \
	  $(LM) eval --model $(MODEL) --text $(EVAL_TEXT) --db tables/$(NAME).sqlite --table $$st --quiet \
	    --lengths $(EVAL_LENGTHS) --windows 3 --by-position 128 --json tables/$(NAME).eval.$$m.json >/dev/null || exit 1; \
	  echo "method $$m: table $$st, tables/$(NAME).{passkey,eval}.$$m.json"; \
	done && \
	$(LM) report --db tables/$(NAME).sqlite --table $$table --theta $$theta --eval tables/$(NAME).eval.json \
	  --passkey tables/$(NAME).passkey.json $(foreach m,$(OTHER_METHODS) $(SCALE_METHODS),--eval tables/$(NAME).eval.$(m).json --passkey tables/$(NAME).passkey.$(m).json) \
	  --out tables/$(NAME).html && \
	$(LM) export --db tables/$(NAME).sqlite --table $$table --theta $$theta --format safetensors --out tables/$(NAME).table.safetensors
	@echo "tables/$(NAME).sqlite · evaluation: tables/$(NAME).{passkey,eval}.{json,svg} · report: tables/$(NAME).html · export: tables/$(NAME).table.safetensors"
	@# The figures the READMEs quote, generated from this run's outputs and checked against them.
	@if command -v python3 >/dev/null; then python3 scripts/demo_summary.py --name $(NAME) \
	  $(if $(filter Fixtures/demo-model,$(MODEL)),--check Fixtures/demo-model/README.md) \
	  || echo "note: the READMEs' figures differ from this run (above); tables/$(NAME).summary.md has this run's"; fi

# For each shape: prefill tokens/s next to this machine's sgemm (f32 and bf16 weights), peak RSS,
# and calibrate's recording throughput next to the prefill, all measured in the same run; the
# 7B shapes as bf16 shards cut to BENCH_7B_LAYERS layers (the cost per layer is flat,
# docs/performance.md); the solver on a Mamba-1-1.4B-shaped recording, in memory and through
# the store; the sampler against `zstd -dc | wc -l` when BENCH_CORPUS names a big .jsonl.zst.
BENCH_7B_LAYERS ?= 2
BENCH_CORPUS ?=
BENCH_TOKENIZER ?= $(or $(LONGMAMBA_SHARED_DATA),../shared/data)/gpt-neox-20b-tokenizer.json
bench: release
	.build/release/longmamba bench --shape mamba-130m
	.build/release/longmamba bench --shape mamba-130m --dtype bf16
	.build/release/longmamba bench --shape mamba2-130m
	.build/release/longmamba bench --shape mamba2-130m --dtype bf16
	.build/release/longmamba bench --shape mamba-370m
	.build/release/longmamba bench --shape falcon-mamba-7b --layers $(BENCH_7B_LAYERS) --repeats 1
	.build/release/longmamba bench --shape codestral-mamba-7b --layers $(BENCH_7B_LAYERS) --repeats 1
	.build/release/longmamba bench-solver --layers 4 --stored
	@if [ -n "$(BENCH_CORPUS)" ]; then .build/release/longmamba bench-corpus --corpus $(BENCH_CORPUS) \
	  --tokenizer $(BENCH_TOKENIZER) --tokenizer-mb 0; \
	else echo "bench-corpus skipped: set BENCH_CORPUS=FILE.jsonl.zst (scripts/make_bench_corpus.py makes one)"; fi
	@if grep -q avx512f /proc/cpuinfo 2>/dev/null; then $(MAKE) --no-print-directory bench-avx2; fi

# The AVX2 code paths (8-float lanes) on an AVX-512 machine: a haswell build in .build-haswell,
# timed against the same run's sgemm like the rest (`make bench` runs it where the CPU has AVX-512,
# so that both kinds of figure come from one run; on an AVX2-only machine `make bench` is already that).
bench-avx2:
	LONGMAMBA_TARGET_CPU=haswell $(SWIFT) build -c release --scratch-path .build-haswell
	.build-haswell/release/longmamba bench --shape mamba-130m
	.build-haswell/release/longmamba bench --shape mamba2-130m
	.build-haswell/release/longmamba bench-solver --layers 4 --stored

# libFuzzer + AddressSanitizer on every parser of untrusted input (Fuzz/README.md): each harness
# runs FUZZ_SECONDS (default 60); fails on a crash, leak, timeout or out-of-memory.
FUZZ_SECONDS ?= 60
fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) sh scripts/fuzz.sh

# Regenerate the golden files and fixtures from the clone alone: a venv with CPU torch and the
# pinned scripts/requirements.txt (scripts/reference-venv.sh), then each generator in dependency
# order (the fixture tokenizer first: the calibration fixture's vocabulary is its vocabulary).
# Tests with the GPT-NeoX-20B tokenizer read ../shared/data, or LONGMAMBA_SHARED_DATA, if present.
VENV ?= /tmp/reference-venv
PY := $(VENV)/bin/python
fixtures:
	VENV=$(VENV) bash scripts/reference-venv.sh
	$(PY) scripts/make_tokenizer_golden.py
	$(PY) scripts/make_fixture_corpus.py
	$(PY) scripts/make_golden.py
	$(PY) scripts/make_longmamba_golden.py
	$(PY) scripts/make_zamba2_golden.py
	$(PY) scripts/make_calibration_fixture.py
	$(PY) scripts/make_torch_fixtures.py
	$(PY) scripts/make_solver_golden.py

clean:
	rm -rf .build
