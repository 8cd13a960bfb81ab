"""Where the statement timeout comes from behind RDS Proxy, and what each choice costs.

    python -m bench.statement_timeout [--smoke]

RDS Proxy refuses a login with startup options, so proxy mode (DB_PROXY=true)
cannot send ``-c statement_timeout`` as the direct engine does. The candidates,
each timed on B1's unit of work (a point read: BEGIN READ ONLY, one SELECT,
ROLLBACK) against one fresh database, taking turns in one rotation:

- login option: the direct engine, ``options=-c statement_timeout=30000``; the
  baseline, and what the proxy refuses;
- role default: the proxy-mode engine; the server applies the login role's own
  default (migration 0007) and the client sends nothing;
- SET LOCAL, own round trip: sent as each transaction's first statement, from
  SQLAlchemy's ``begin`` event;
- SET LOCAL, same round trip: prepended to each statement's text (one Query
  message, two statements).

Each variant is first checked to run with a 30 s timeout. Prints medians, and
each one's ratio to the baseline in the same run. Not part of ``python -m
bench`` (B1-B6) nor of the tests: timings are never asserted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from dataaccess import Database

from .harness import PRODUCTS, BenchDB, median, rng, rotate, sku, throwaway_bench_database, timed
from .report import machine

SET_LOCAL = "SET LOCAL statement_timeout = 30000"


@dataclass(frozen=True)
class Variant:
    name: str
    round_trips: int
    behind_proxy: str
    db: Database


def set_local_on_begin(db: Database) -> Database:
    """SET LOCAL as the first statement of every transaction: its own round trip."""

    def begin(conn: sa.Connection) -> None:
        # psycopg2 sends BEGIN [READ ONLY] first, then this, in the transaction it opens.
        with conn.connection.dbapi_connection.cursor() as cursor:  # type: ignore[union-attr]
            cursor.execute(SET_LOCAL)

    sa.event.listen(db.writer, "begin", begin)
    return db


def set_local_prepended(db: Database) -> Database:
    """SET LOCAL in the same Query message as every statement: no extra round trip."""

    def prepend(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> tuple[str, Any]:
        return f"{SET_LOCAL}; {statement}", parameters

    sa.event.listen(db.writer, "before_cursor_execute", prepend, retval=True)
    return db


def variants(bdb: BenchDB) -> list[Variant]:
    proxied = bdb.app_settings(DB_PROXY="true")
    return [
        Variant(
            "login option (baseline)", 3, "refused", Database.from_settings(bdb.app_settings())
        ),
        Variant("role default (0007)", 3, "nothing sent", Database.from_settings(proxied)),
        Variant(
            "SET LOCAL, own round trip",
            4,
            "a SET: pins",
            set_local_on_begin(Database.from_settings(proxied)),
        ),
        Variant(
            "SET LOCAL, same round trip",
            3,
            "a SET: pins",
            set_local_prepended(Database.from_settings(proxied)),
        ),
    ]


def run(bdb: BenchDB, reads: int, rounds: int) -> list[tuple[Variant, float]]:
    picks = [sku(rng("timeout").randrange(PRODUCTS)) for _ in range(reads)]
    chosen = variants(bdb)
    try:
        for variant in chosen:
            with variant.db.unit_of_work(read_only=True) as uow:
                shown = uow.execute(sa.text("SHOW statement_timeout")).scalar_one()
            assert shown == "30s", f"{variant.name}: statement_timeout is {shown}"

        def side(db: Database) -> Callable[[int], list[float]]:
            def op(i: int) -> None:
                with db.unit_of_work(read_only=True) as uow:
                    assert uow.products.get_by_sku(picks[i % len(picks)]) is not None

            return lambda n: timed(op, n)

        latencies = rotate([side(v.db) for v in chosen], total=reads, rounds=rounds)
    finally:
        for variant in chosen:
            variant.db.dispose()
    return [(v, median(times) * 1e6) for v, times in zip(chosen, latencies, strict=True)]


def render(results: list[tuple[Variant, float]], *, reads: int, tls: bool, command: str) -> str:
    base = results[0][1]
    lines = [
        f"Point read (BEGIN READ ONLY, SELECT, ROLLBACK), {reads:,} per variant, median µs; "
        f"`{command}`",
        f"Machine: {machine(tls=tls)}",
        "",
        "| statement timeout from | µs per read | ratio | round trips | behind RDS Proxy |",
        "|---|---:|---:|---:|---|",
    ]
    for variant, us in results:
        lines.append(
            f"| {variant.name} | {us:.0f} | {us / base:.2f} | {variant.round_trips} | "
            f"{variant.behind_proxy} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.statement_timeout", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; checks, not numbers")
    args = parser.parse_args(argv)
    # Many short rounds: the machine's load drifts, and every variant should see it alike.
    reads, rounds = (100, 2) if args.smoke else (10_000, 25)
    with throwaway_bench_database("timeout") as bdb:
        results = run(bdb, reads, rounds)
        tls = bdb.ca_file is not None
    command = "python -m bench.statement_timeout" + (" --smoke" if args.smoke else "")
    print(render(results, reads=reads, tls=tls, command=command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
