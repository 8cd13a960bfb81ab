# `make env`: the environment of what a running `make run` serves, for another shell:
#   eval "$(make -s env)"              DB_* and PG* as the app role, API_URL, TOKEN, CUSTOMER_TOKEN
#   eval "$(make -s env ROLE=admin)"   the same as the superuser (alembic, migrations)
# scripts/run_local.py writes what it prints into its run folder (owner-only) while it
# runs, and removes it when it stops; without a run this fails and says so.
.PHONY: env

##@ Start here

env: ## print export lines for what `make run` serves: eval "$(make -s env)" (ROLE=admin)
	@test -x $(PY) || { echo 'make env: make run is not running (there is no $(VENV) yet): start it in another terminal first' >&2; exit 1; }
	@$(PY) -m scripts.run_local --env $(if $(ROLE),--role $(ROLE))
