# The set-up commands of the README. Each builds (or reuses) .venv itself.
#   make demo [OUT=fairhead-demo]   runs the whole pipeline offline on the embedded default
#   make test                       runs the fast tests (deselects those marked slow or fault)
#   make test-all                   runs the whole test suite (what CI runs: .ci/run)
PYTHON ?= python3
VENV ?= .venv
OUT ?= fairhead-demo
BIN := $(VENV)/bin
STAMP := $(VENV)/.fairhead-installed

.PHONY: demo test test-all env clean-env

env: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fairhead demo --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not fault" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean-env:
	rm -rf $(VENV)
