# The two commands an operator needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/python -m sandbox up --servers 1
	$(BIN)/pyinfra -y inventory.py deploy.py
	$(BIN)/python -m sandbox status

test: setup
	$(BIN)/python -m pytest
