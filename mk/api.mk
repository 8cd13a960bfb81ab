# The API: `make run` serves it on a throwaway local PostgreSQL (PORT overrides 8000).
.PHONY: run

run: install ## serve the API on 127.0.0.1:8000 over a local, migrated, seeded PostgreSQL
	$(PY) -m scripts.run_local $(if $(PORT),--port $(PORT))
