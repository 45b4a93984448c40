# The README's commands. `make book` builds the executed HTML book; `make test` runs every test.
# MODE=full executes the chapters in full mode (CIFAR-10, larger models; meant for a GPU).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODE ?= quick

.PHONY: book test unit notebooks strict-book bench clean help
.DEFAULT_GOAL := help

help:
	@echo "make book   - set up $(VENV), execute every chapter ($(MODE) mode) and build _build/html"
	@echo "make test   - set up $(VENV), run unit tests, nbval over book/ and a strict book build"
	@echo "make bench SUITE=anatomy - run a benchmark suite, figures to _build/bench/SUITE.json"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.book-deps: $(BIN)/python requirements.txt pyproject.toml
	$(BIN)/python -m pip install --quiet -r requirements.txt -e .
	touch $@

$(VENV)/.test-deps: $(VENV)/.book-deps requirements-test.txt
	$(BIN)/python -m pip install --quiet -r requirements-test.txt
	touch $@

book: $(VENV)/.book-deps
	VITLIB_MODE=$(MODE) $(BIN)/jupyter-book build . --all
	@test -f _build/html/index.html && echo "book: $(CURDIR)/_build/html/index.html"

unit: $(VENV)/.test-deps
	$(BIN)/python -m pytest tests

notebooks: $(VENV)/.test-deps
	VITLIB_MODE=quick $(BIN)/python -m pytest --nbval-lax book

strict-book: $(VENV)/.test-deps
	VITLIB_MODE=quick $(BIN)/jupyter-book build . --all -W -n --keep-going

test: unit notebooks strict-book

SUITE ?= anatomy
bench: $(VENV)/.book-deps
	$(BIN)/python -m vitlib.bench $(SUITE) --json _build/bench/$(SUITE).json

clean:
	rm -rf _build .pytest_cache
