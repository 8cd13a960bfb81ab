"""`python -m bench [--smoke] [--only B1,B3] [--out bench/RESULTS.md]`

Starts its own throwaway PostgreSQL (scripts/localpg.py), migrates a fresh
database, runs each workload pair, writes the results table, and stops the
cluster even when a workload fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from scripts.localpg import LocalPostgres, free_port, usable_root

from . import (
    b1_point_read,
    b2_place_order,
    b3_ingest,
    b4_connect,
    b5_api,
    b6_lambda,
    b7_cold_start,
)
from .harness import BenchDB, Row, Sizes, bench_database
from .report import render

REPO = Path(__file__).resolve().parent.parent
WORKLOADS: dict[str, Callable[[BenchDB, Sizes], Row]] = {
    "B1": b1_point_read.run,
    "B2": b2_place_order.run,
    "B3": b3_ingest.run,
    "B4": b4_connect.run,
    "B5": b5_api.run,
    "B6": b6_lambda.run,
    "B7": b7_cold_start.run,
}


def run_all(
    host: str,
    port: int,
    superuser: str,
    password: str,
    sizes: Sizes,
    only: Sequence[str] = tuple(WORKLOADS),
    progress: Callable[[str], None] = lambda _: None,
    ca_file: str | None = None,
) -> list[Row]:
    """Run the chosen workloads against a fresh database in a running cluster."""
    rows = []
    with bench_database(host, port, superuser, password, ca_file) as bdb:
        for key in only:
            started = time.perf_counter()
            row = WORKLOADS[key](bdb, sizes)
            progress(
                f"{key}: ours {row.ours:,.1f} vs baseline {row.baseline:,.1f} {row.unit}; "
                f"ratio {row.ratio_text} ({'met' if row.met else 'MISSED'}: {row.goal}) "
                f"[{time.perf_counter() - started:.1f} s]"
            )
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; checks, not numbers")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated keys")
    parser.add_argument("--out", type=Path, help="results file (default: bench/RESULTS.md)")
    args = parser.parse_args(argv)
    only = [k.strip().upper() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in only if k not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(unknown)}")
    sizes = Sizes.smoke() if args.smoke else Sizes()
    out = args.out or (None if args.smoke else REPO / "bench" / "RESULTS.md")

    root = usable_root(REPO / ".localpg" / f"bench-{os.getpid()}")
    cluster = LocalPostgres(root, free_port())
    started = time.perf_counter()
    tls = False
    try:
        cluster.start()
        tls = cluster.ca_file is not None  # read now: the folder is gone after the run
        rows = run_all(
            cluster.host,
            cluster.port,
            cluster.user,
            cluster.password,
            sizes,
            only,
            progress=lambda line: print(line, flush=True),
            ca_file=str(cluster.ca_file) if cluster.ca_file else None,
        )
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - started
    command = "python -m bench" + (" --smoke" if args.smoke else "")
    if args.only != ",".join(WORKLOADS):
        command += f" --only {','.join(only)}"
    text = render(rows, sizes=sizes, command=command, elapsed=elapsed, tls=tls)
    if out is not None:
        out.write_text(text)
        print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
