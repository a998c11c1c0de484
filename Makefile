# `make demo` and `make test` are all a newcomer needs (Python 3.11+).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# uv installs from uv.lock; it comes from PyPI, pinned, into the project's own venv.
UV_VERSION := 0.13.9
UV     := $(BIN)/uv

.PHONY: setup lock demo test lint typecheck unit bench loadtest golden clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(UV): | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Exactly the locked versions (--locked: fail if uv.lock is older than pyproject.toml).
$(STAMP): uv.lock pyproject.toml | $(UV)
	$(UV) sync --quiet --locked --inexact --extra test --python $(BIN)/python
	touch $(STAMP)

setup: $(STAMP)

# Refresh uv.lock to the newest versions pyproject.toml allows; commit the result.
lock: | $(UV)
	$(UV) lock --upgrade

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

# Whole calls on real gateways with faults, loopback only (ARGS="--calls 50 --store redis").
loadtest: $(STAMP)
	$(BIN)/python -m bench.loadtest $(ARGS)

clean:
	rm -rf $(VENV) .typecheck .mypy_cache .pytest_cache .ruff_cache build *.egg-info
