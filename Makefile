# One command each: `make demo` runs the demo on SQLite, `make test` runs lint + types + tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,postgres,bench,spark]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ordertrail demo

lint: $(STAMP)
	$(BIN)/ruff check ordertrail tests bench
	$(BIN)/ruff format --check ordertrail tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .cache ordertrail-demo
