# Failure drills: `make drills` causes each fault of the failure model for
# real (failover, restart, pause, black hole, token expiry, rotation, hostile input,
# leaked secrets, runaway query) and writes docs/RELIABILITY.md from the run.
# Their short versions run in `make test` (tests/drills).
.PHONY: drills drills-short

##@ Benchmarks and drills

drills: install ## run every failure drill (a few minutes) and write docs/RELIABILITY.md
	$(PY) -m drills

drills-short: install ## the drills at make test's pace; prints the table, writes nothing
	$(PY) -m drills --short
