# Two commands do everything on a fresh machine:
#   make run    calibrate the embedded default (fixture model + corpus)
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

# The embedded default: calibrate the fixture model on the fixture corpus, then report and
# evaluate. Outputs in tables/ (git-ignored).
MODEL ?= Fixtures/models/mamba2-tiny-calib
CORPUS ?= Fixtures/corpus/fixture.jsonl.zst
EVAL_TEXT ?= Fixtures/corpus/README.md
NAME := $(notdir $(MODEL))
run: release
	mkdir -p tables
	rm -f tables/$(NAME).sqlite tables/$(NAME).sqlite-wal tables/$(NAME).sqlite-shm
	.build/release/longmamba calibrate --model $(MODEL) --corpus $(CORPUS) --db tables/$(NAME).sqlite \
	  --samples 5 --interval 256 --max-length 8192 --clamp 0.05 --aggregate max
	.build/release/longmamba report --db tables/$(NAME).sqlite --table 1 --out tables/$(NAME).html
	@echo "table: tables/$(NAME).sqlite (id 1) · report: tables/$(NAME).html"

# Prefill throughput of 130m/370m-shaped random-weight models next to this machine's sgemm,
# and the solver on a Mamba-1-1.4B-shaped recording.
bench: release
	.build/release/longmamba bench --shape mamba-130m
	.build/release/longmamba bench --shape mamba2-130m
	.build/release/longmamba bench --shape mamba-370m
	.build/release/longmamba bench-solver --layers 4

clean:
	rm -rf .build
