# Two commands do everything on a fresh machine:
#   make run    calibrate the embedded default (demo model + its corpus), evaluate, report
#   make test   build and run the whole test suite
SWIFT ?= swift
DEB_PACKAGES := libzstd-dev libsqlite3-dev libopenblas-dev zstd sqlite3

.PHONY: deps build release test run bench clean

# Install the system libraries when missing (needs root or sudo; apt on Debian/Ubuntu).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && $$SUDO DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

# The embedded default: the trained demonstration model (KJV Mamba-2, training length 128) is
# calibrated on its Pile-format calibration corpus, evaluated vanilla vs LongMamba at 1×…32× the
# training length on held-out text, and reported. Outputs in tables/ (git-ignored).
MODEL ?= Fixtures/demo-model
CORPUS ?= Fixtures/demo-corpus/train-sample.jsonl.zst
EVAL_TEXT ?= Fixtures/demo-corpus/eval.txt
INTERVAL ?= 64
MAX_LENGTH ?= 4096
EVAL_LENGTHS ?= 128,256,512,1024,2048,4096
THETA ?= 0.05
NAME := $(notdir $(MODEL))
LM := .build/release/longmamba
run: release
	mkdir -p tables
	rm -f tables/$(NAME).sqlite tables/$(NAME).sqlite-wal tables/$(NAME).sqlite-shm
	$(LM) calibrate --model $(MODEL) --corpus $(CORPUS) --db tables/$(NAME).sqlite \
	  --samples 5 --interval $(INTERVAL) --max-length $(MAX_LENGTH) --clamp 0.05 --aggregate max
	$(LM) eval --model $(MODEL) --text $(EVAL_TEXT) --db tables/$(NAME).sqlite --table 1 --theta $(THETA) \
	  --lengths $(EVAL_LENGTHS) --windows 3 --json tables/$(NAME).eval.json --csv tables/$(NAME).eval.csv --svg tables/$(NAME).eval.svg
	$(LM) report --db tables/$(NAME).sqlite --table 1 --theta $(THETA) --eval tables/$(NAME).eval.json --out tables/$(NAME).html
	@echo "table: tables/$(NAME).sqlite (id 1) · evaluation: tables/$(NAME).eval.{json,csv,svg} · report: tables/$(NAME).html"

# Prefill throughput of 130m/370m-shaped random-weight models next to this machine's sgemm,
# and the solver on a Mamba-1-1.4B-shaped recording.
bench: release
	.build/release/longmamba bench --shape mamba-130m
	.build/release/longmamba bench --shape mamba2-130m
	.build/release/longmamba bench --shape mamba-370m
	.build/release/longmamba bench-solver --layers 4

clean:
	rm -rf .build
