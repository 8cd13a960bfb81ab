# The two commands a newcomer needs:
#   make run    serve the API on a throwaway local PostgreSQL
#   make test   install what is needed, then lint, type-check and run the whole suite
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Extra prerequisites of `make test`, added by the mk/*.mk includes (e.g. the checkov venv).
TEST_PREREQS :=

include $(sort $(wildcard mk/*.mk))

.PHONY: help install lint format typecheck test

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[api,lambda,dev]'
	touch $@

install: $(VENV)/.installed ## create .venv and install the package with all extras

lint: install ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: install ## mypy (strict) on dataaccess/
	$(VENV)/bin/mypy

test: install $(TEST_PREREQS) lint typecheck ## the whole suite: lint, types, unit, integration, migrations, infra
	$(VENV)/bin/pytest $(PYTEST_ARGS)
