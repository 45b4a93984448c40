# The README's commands. `make book` builds the executed HTML book; `make test` runs every test.
# MODE=full executes the chapters in full mode (CIFAR-10, larger models; meant for a GPU).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODE ?= quick
# The scripts the pages load (require.js, the widget embed manager, MathJax, plotly.js), which
# Sphinx copies into the book so that it works offline (vitlib/book/offline.py; npm and the plotly wheel).
OFFLINE := _build/offline
# The chapters as nbval executed them, beside the book's sources: what the strict build renders.
EXECUTED := _build/executed

.PHONY: book test unit slow notebooks strict-book browser colab-check full-rehearsal record bench gpu-bench gpu-record \
	clean help
.DEFAULT_GOAL := help

help:
	@echo "make book   - set up $(VENV), execute every chapter ($(MODE) mode) and build _build/html"
	@echo "make unit   - the fast tier of the unit tests (under a minute); make slow - the rest"
	@echo "make test   - set up $(VENV), run unit tests, nbval over book/, a strict build of what nbval"
	@echo "              executed, and a headless-browser test of the built pages"
	@echo "make colab-check - the chapters as Colab runs them: a fresh environment at Colab's versions, vitlib"
	@echo "              installed from the committed tree, every chapter in quick mode, every control moved"
	@echo "make full-rehearsal - every chapter's full mode at the smoke scale on the CPU, with each chapter's"
	@echo "              expected time and memory on a T4 and an A100 (RECORD=1 writes book/results/full-mode.json)"
	@echo "make record - execute every chapter ($(MODE) mode) into the committed record, book/results/chapters/"
	@echo "make bench SUITE=anatomy - run a benchmark suite, figures to _build/bench/SUITE.json"
	@echo "make gpu-bench - on one GPU, in under 5 minutes: every model family eager and compiled, fp32 and"
	@echo "              16-bit, attention kernels from 197 to 4096 tokens; JSON to $(GPU_BENCH)"
	@echo "make gpu-record - on one GPU, in at most 10 minutes: gpu-bench's figures and the main recipe's"
	@echo "              training (throughput, accuracy), committed to $(GPU_RECORD) with provenance"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.book-deps: $(BIN)/python requirements.txt pyproject.toml
	$(BIN)/python -m pip install --quiet -r requirements.txt -e .
	touch $@

$(VENV)/.test-deps: $(VENV)/.book-deps requirements-test.txt
	$(BIN)/python -m pip install --quiet -r requirements-test.txt
	touch $@

$(OFFLINE)/.done: $(VENV)/.book-deps vitlib/book/offline.py
	$(BIN)/python -m vitlib.book.offline $(OFFLINE)
	touch $@

# VITLIB_BOOK_BUILD: no progress widgets saved into pages; charts load the book's own plotly.js.
book: $(VENV)/.book-deps $(OFFLINE)/.done
	VITLIB_BOOK_BUILD=1 VITLIB_MODE=$(MODE) $(BIN)/jupyter-book build . --all
	@test -f _build/html/index.html && echo "book: $(CURDIR)/_build/html/index.html"

# Tests in tiers: `make unit` the fast tier (under a minute), `make slow` what trains, starts
# processes or builds environments; `make test` runs both.
unit: $(VENV)/.test-deps
	$(BIN)/python -m pytest tests -m "not slow and not browser"

slow: $(VENV)/.test-deps
	$(BIN)/python -m pytest tests -m "slow and not browser"

# Each chapter executes once, here; tests/executed_book.py keeps what it produced in $(EXECUTED).
notebooks: $(VENV)/.test-deps
	VITLIB_MODE=quick $(BIN)/python -m pytest --nbval-lax book --executed-book $(EXECUTED)

# Renders that execution (the staged _config.yml does not execute) and fails on any warning.
strict-book: notebooks $(OFFLINE)/.done
	$(BIN)/jupyter-book build $(EXECUTED) --path-output . --all -W -n --keep-going

browser: strict-book
	$(BIN)/python -m pytest tests -m browser

test: unit slow notebooks strict-book browser
	@cat $(EXECUTED)/chapter-times.txt

# Colab as it ships (.ci/colab.py): the environment is made once per commit, both checks use it.
COLAB := _build/colab
colab-check:
	$(PYTHON) .ci/colab.py venv --work $(COLAB)
	$(PYTHON) .ci/colab.py check --work $(COLAB)

full-rehearsal:
	$(PYTHON) .ci/colab.py venv --work $(COLAB) --reuse
	$(PYTHON) .ci/colab.py rehearse --work $(COLAB) $(if $(RECORD),--record)

# The record that ships with vitlib (book/results/): a deliberate refresh, never part of a build.
record: $(VENV)/.test-deps
	rm -rf book/results/chapters
	VITLIB_RESULTS=$(CURDIR)/book/results/chapters VITLIB_MODE=$(MODE) $(BIN)/python -m pytest --nbval-lax book \
		-p no:cacheprovider -q

SUITE ?= anatomy
bench: $(VENV)/.book-deps
	$(BIN)/python -m vitlib.bench $(SUITE) --json _build/bench/$(SUITE).json

# Synthetic inputs, a time budget inside (vitlib/book/studies/gpu.py); the chapters show the results
# beside their live numbers. On a machine without a GPU it runs the tiny setting in seconds.
GPU_BENCH ?= book/results/gpu-bench.json
gpu-bench: $(VENV)/.book-deps
	$(BIN)/python -m vitlib.bench gpu --json $(GPU_BENCH) --rounds 2 --min-run-time 0.2

# On one GPU, at most 10 minutes: the gpu suite and the main recipe's training (vitlib/book/studies/gpu_record.py),
# written with its provenance to book/results/, which ships with vitlib. It runs on the machine's own python3
# (a lent GPU machine has torch and reaches no package index), vitlib from this checkout.
GPU_RECORD ?= book/results/gpu-record.json
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
gpu-record:
	PYTHONPATH=$(CURDIR) PYTHONUNBUFFERED=1 $(GPU_PYTHON) -m vitlib.bench gpu-record --json $(GPU_RECORD) \
		--rounds 2 --min-run-time 0.2

clean:
	rm -rf _build .pytest_cache
