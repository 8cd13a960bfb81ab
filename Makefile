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

.PHONY: help run install install-api lint format typecheck test

##@ Start here

help: ## list the targets and the variables they read
	@awk 'FNR == 1 { group = "" } \
	  /^##@ / { group = substr($$0, 5); if (!(group in seen)) { seen[group] = 1; order[++n] = group } next } \
	  /^[a-zA-Z_-]+:.*## / { split($$0, parts, ":.*## "); line[group] = line[group] sprintf("  %-16s %s\n", parts[1], parts[2]) } \
	  END { for (i = 1; i <= n; i++) printf "%s:\n%s\n", order[i], line[order[i]] }' $(MAKEFILE_LIST)
	@printf '%s\n' 'Variables:' \
	  '  PORT=8000            make run: the port to serve on' \
	  '  PYTEST_ARGS=...      make test: pytest arguments (no coverage floor then)' \
	  '  HANDLER=stock_events|report, EVENT=path, REPEAT=n   make invoke' \
	  '  ROLE=admin           make env: the superuser login (alembic) instead of app_iam' \
  '  ENV_FILE=path, JSON=1                               make doctor' \
	  '  TF_BACKEND_CONFIG=file, TF_STATE_KEY=key            make tf-init' \
	  '  PYTHON=python3       the interpreter .venv is made from'

run: install-api ## serve the API on a local, migrated, seeded PostgreSQL (PORT=8000)
	$(PY) -m scripts.run_local $(if $(PORT),--port $(PORT))

# Coverage floors for the whole suite, a little under the measured figures (94.1% in
# all, 94% of dataaccess, 93% of api, 97% of lambda on 2026-12-02; README, "Test";
# docs/testing.md, "Coverage"); a run narrowed with PYTEST_ARGS reports coverage but has no floor.
COVERAGE_FLOOR ?= 91
COVERAGE_FLOOR_DATAACCESS ?= 92

test: install $(TEST_PREREQS) lint typecheck ## install what it needs, then lint, types and the whole suite with coverage
	@mkdir -p build/coverage
	$(VENV)/bin/pytest --cov --cov-report=term $(if $(PYTEST_ARGS),,--cov-fail-under=$(COVERAGE_FLOOR)) $(PYTEST_ARGS)
ifeq ($(PYTEST_ARGS),)
	@pct=$$($(VENV)/bin/coverage report --include='dataaccess/*' --format=total); \
	echo "dataaccess coverage: $$pct% (floor $(COVERAGE_FLOOR_DATAACCESS)%)"; \
	test "$$pct" -ge $(COVERAGE_FLOOR_DATAACCESS)
endif

##@ Development

# `make run` needs the package and its api extra only; `make test` adds the rest
# (Lambda's Powertools, pytest, moto, linters: several hundred MB more). pip -qq
# prints errors only: the echo lines say what is happening.
$(VENV)/.installed-api: pyproject.toml
	@echo "==> installing the API's dependencies into $(VENV) (once; about half a minute)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -qq --disable-pip-version-check -e '.[api]'
	touch $@

$(VENV)/.installed: $(VENV)/.installed-api
	@echo "==> installing the Lambda, test and lint dependencies into $(VENV) (once; about a minute)"
	$(PY) -m pip install -qq --disable-pip-version-check -e '.[api,lambda,dev]'
	touch $@

install-api: $(VENV)/.installed-api ## create .venv with the package and what the API needs

install: $(VENV)/.installed ## create .venv with the package and all extras (tests, Lambda)

lint: install ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: install ## mypy (strict) on dataaccess/
	$(VENV)/bin/mypy

