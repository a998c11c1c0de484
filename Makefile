# `make demo` and `make test` are all a newcomer needs (Python 3.11+).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench golden clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when the dependencies change.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m voicecall.plugin.demo

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy sees the installed layout (voicecall.dsl, …) through a folder of links.
typecheck: $(STAMP)
	@mkdir -p .typecheck/voicecall
	@for d in dsl compiler runtime plugin flows; do ln -sfn $(CURDIR)/$$d .typecheck/voicecall/$$d; done
	$(BIN)/mypy .typecheck/voicecall tests bench

unit: $(STAMP)
	$(BIN)/pytest

golden: $(STAMP)
	$(BIN)/pytest tests --update-golden

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .typecheck .mypy_cache .pytest_cache .ruff_cache build *.egg-info
