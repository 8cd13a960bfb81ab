"""The results file: one table row per workload, the machine, the command, the notes."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
from collections.abc import Sequence

import psycopg2
import sqlalchemy

from .harness import Row, Sizes


def machine(*, tls: bool) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    memory = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        memory = f", {kb / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs{memory}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
        f"psycopg2 {psycopg2.__version__.split()[0]}, PostgreSQL {postgres_version()} "
        + (
            "(local, loopback TCP, TLS with sslmode=verify-full on both sides, fsync off)"
            if tls
            else "(local, loopback TCP, no TLS, fsync off)"
        )
    )


def postgres_version() -> str:
    from scripts.localpg import pg_bindir

    try:
        out = subprocess.run(
            [str(pg_bindir() / "postgres"), "--version"], capture_output=True, text=True, check=True
        )
        # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" -> "15.18"
        match = re.search(r"\(PostgreSQL\) ([\d.]+)", out.stdout)
        return match.group(1) if match else out.stdout.strip()
    except (OSError, RuntimeError, subprocess.CalledProcessError):
        return "?"


# Two earlier full runs of `python -m bench`: the first (commit 6b213be, the machine
# busy with other test runs) and the one before the Core repositories (commit
# a3512c8), and what changed since the first, per workload. "Now" is this run's ratio.
HISTORY = {
    "B1": (
        4.19,
        1.62,
        "pre-ping only after 5 s idle (`DB_POOL_PRE_PING_IDLE`): two round trips fewer per "
        "checkout; the read-only flag set per transaction (and reset to the server default) "
        "instead of per-checkout connection characteristics; then (after a3512c8) the "
        "repository runs a prebuilt Core statement on the unit of work's connection and "
        "returns a frozen record: no ORM session, identity map or entity per read",
    ),
    "B2": (
        4.27,
        1.52,
        "one `UPDATE ... FROM unnest` for the stock instead of an ORM UPDATE per product; "
        "the customer checked by its foreign key; B1's pre-ping change; then (after "
        "a3512c8) stock, order and lines written by one statement of data-modifying CTEs "
        "instead of an UPDATE and two ORM bulk INSERT ... RETURNING: 4 round trips per "
        "order instead of 6, and records instead of ORM entities",
    ),
    "B3": (
        0.87,
        1.01,
        "the chunk's products locked in sku order (the order every writer of stock uses), "
        "events decided on the locked stock, one statement records the ledger rows and "
        "moves the stock; then (after a3512c8) the whole chunk in one statement when every "
        "event fits, decided before any ledger row is written, so the ledger is "
        "append-only and the application role has no DELETE on it",
    ),
    "B4": (
        1.30,
        0.97,
        "no change to the package: the first run compared a 307-character token with a "
        "22-character password under SCRAM, and SQLAlchemy's engine with raw psycopg2; the "
        "baseline is now the same engine with a static password of the token's length "
        "(both effects measured in the notes)",
    ),
    "B5": (
        0.50,
        0.68,
        "B1's changes on the request's read path; then (after a3512c8) views without a "
        "request model skip SpecTree's second validation of the response they built; the "
        "request log builds its fields only when it writes them; gunicorn's config "
        "freezes each worker's loaded objects for the garbage collector (`gc.freeze()`, "
        "on both sides). With all of these, seven runs on this machine measured 0.75 to "
        "0.83 (median 0.79): at the goal's edge, and below it as often as not. Since "
        "then our API verifies an RS256 bearer token on every request and "
        "the baseline verifies none, and gunicorn's worker buffers each request in its "
        "event loop before a thread takes it: both are costs the baseline does not pay "
        "(0.59). Now a verified token's principal is remembered for a minute (the check "
        "cost ~230 µs per request; five runs with that: 0.57 to 0.76, median 0.72), and "
        "gunicorn's config collects the youngest GC generation every 50,000 objects "
        "instead of 700, on both sides (three runs with both: 0.76 to 0.79). Then a GET's "
        "unit of work runs its one SELECT without a transaction (`autocommit=True`): one "
        "round trip instead of BEGIN, SELECT and ROLLBACK; the baseline keeps psycopg2's "
        "default transaction (three runs: 0.80, 0.97, 0.86)",
    ),
    "B6": (
        1.20,
        0.09,
        "the handler applies the batch set-based in one unit of work "
        "(`dataaccess.ingest`) instead of one unit of work per record",
    ),
}


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


def render(rows: Sequence[Row], *, sizes: Sizes, command: str, elapsed: float, tls: bool) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{command}` (`make bench`) on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC in {elapsed:.0f} s.",
        "",
        f"Machine: {machine(tls=tls)}.",
        "",
        "Each pair runs in one process: a warm-up of every side, then rounds in which the "
        f"sides take turns going first ({sizes.rounds} unless a row's notes say otherwise); "
        "the numbers are medians. "
        "The machine is shared and noisy: the ratios are the result, not the absolute numbers.",
        "",
        "| # | Workload | Ours | Baseline | Ratio (ours/baseline) | Goal | Met |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.key} | {row.workload} | {_num(row.ours)} | {_num(row.baseline)} "
            f"| {row.ratio_text} | {row.goal} | {'yes' if row.met else '**no**'} |"
        )
    lines += ["", "Units: " + "; ".join(f"{r.key} {r.unit}" for r in rows) + ".", ""]
    lines += [
        "## Before and after",
        "",
        "The first run (commit 6b213be) shared the machine with other test runs, so part "
        "of each difference is noise; the notes of each row below measure the causes in "
        "this run.",
        "",
        "| # | Ratio at the first run (6b213be) | Ratio before Core repositories (a3512c8) "
        "| Ratio now | What changed |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        if row.key in HISTORY:
            first, previous, change = HISTORY[row.key]
            lines.append(
                f"| {row.key} | {first:.2f} | {previous:.2f} | {row.ratio_text} | {change} |"
            )
    lines.append("")
    for row in rows:
        lines += [f"## {row.key}: {row.workload}", ""]
        lines += [f"- {note}" for note in row.notes]
        lines.append("")
    return "\n".join(lines)
