"""Benchmarks of dataaccess against hand-written baselines: `python -m bench [--smoke]`.

Each workload runs ours and its baseline in one process, alternating rounds
after a warm-up, and reports medians and their ratio. Not part of the test
suite; `tests/bench` runs the smoke mode (tiny sizes) so the scripts cannot rot.
"""
