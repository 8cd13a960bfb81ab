# Benchmarks against hand-written baselines: `make bench` writes bench/RESULTS.md.
# They start their own throwaway PostgreSQL and stop it even when a workload fails.
.PHONY: bench bench-smoke

##@ Benchmarks and drills

bench: install ## run the benchmarks (~5 min) and write bench/RESULTS.md
	$(PY) -m bench

bench-smoke: install ## the benchmarks with tiny sizes: checks that they run, not numbers
	$(PY) -m bench --smoke
