# trady: two commands for a newcomer (README): `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench lint clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/trady demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/trady bench

lint: $(STAMP)
	$(BIN)/ruff check compiler tests

clean:
	rm -rf out build

# Reduced TraDy comparison (docs/EXPERIMENTS.md): mcunet-5fps, 2 budgets x 5 strategies x 3 seeds on Ray.
.PHONY: experiments-small
experiments-small: $(STAMP)
	$(BIN)/trady experiment experiments/small.json --out out/experiments/small --num-cpus 2

# libFuzzer + ASan/UBSan on the UART streaming frame parser (docs/STREAM.md), FUZZ_SECONDS long; needs clang and
# libclang-rt-14-dev. Not part of `make test`. Prints executions and crashes; exit 1 if it found one.
.PHONY: fuzz
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	$(BIN)/python -m compiler.stream_fuzz --seconds $(FUZZ_SECONDS)
