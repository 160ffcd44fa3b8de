# Two commands do all set-up on a fresh Debian machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.mlpipe-installed

.PHONY: env demo test lint clean

$(STAMP): pyproject.toml requirements/constraints.txt scripts/bootstrap.sh
	scripts/bootstrap.sh $(PYTHON) $(VENV)
	touch $@

env: $(STAMP)

demo: env
	VENV=$(VENV) scripts/demo.sh

test: env
	VENV=$(VENV) scripts/test.sh

lint: env
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
