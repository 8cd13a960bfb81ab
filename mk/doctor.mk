# `make doctor`: walk the chain from the DB_* environment to a query and say
# what to change at the first broken link (python -m dataaccess doctor; docs/infrastructure.md).
# It reads the environment as the service does: export DB_* first, or name a file of
# NAME=value lines with ENV_FILE=path. JSON=1 prints the report as JSON. make itself
# exits 2 on any failure (its "Error N" line shows the doctor's status); scripts that
# branch on the status run `python -m dataaccess doctor` directly.
.PHONY: doctor

##@ Operations

doctor: install ## diagnose the database the DB_* environment names (ENV_FILE=path, JSON=1)
	@$(if $(ENV_FILE),set -a && . $(abspath $(ENV_FILE)) && set +a &&) \
	$(PY) -m dataaccess doctor $(if $(JSON),--json)
