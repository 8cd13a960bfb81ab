"""What migration 0009 changed: stock writes and the low-stock report, with and without
an index on products.stock.

    python -m bench.hot_updates [--smoke] [--products N]

One fresh database, migrated to head and seeded as for B1-B6, grown to N
products (default 100,000; one in a hundred of the added ones below the
report's threshold). The two schemas of `products` take turns, each block
starting from the table rewritten (VACUUM FULL) in its schema's shape:

- 0009 (head): no index on stock, fillfactor 90, so stock updates can be HOT;
- 0008: `ix_products_stock_sku (stock, sku)`, the default fillfactor (100).

In each block: B6's transaction, a batch of 10 stock events through
`ingest_stock_events` on the package's Database (the lock, the statement that
records and applies, the commit), timed per batch; then the low-stock report
(`reports.low_stock`, threshold 10) through a read-only unit of work, timed per
call; and how much WAL the batches wrote and how many pages the table grew.
Prints medians, and ratios against 0008's in the same run. Not part of `python
-m bench` (B1-B7); the tests run it in smoke mode and never assert a timing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import sys
from dataclasses import dataclass

from dataaccess import Database, reports
from dataaccess.ingest import ingest_stock_events
from dataaccess.records import StockEventIn

from .harness import PRODUCTS, BenchDB, median, rng, sku, throwaway_bench_database, timed
from .report import machine

STOCK_INDEX = "ix_products_stock_sku"
THRESHOLD = 10
BATCH = 10


@dataclass(frozen=True)
class Schema:
    name: str
    ddl: tuple[str, ...]  # run in autocommit, before the table is rewritten and analysed


HEAD = Schema(
    "0009: no stock index, fillfactor 90",
    (f"DROP INDEX IF EXISTS {STOCK_INDEX}", "ALTER TABLE products SET (fillfactor = 90)"),
)
BEFORE = Schema(
    "0008: index (stock, sku), fillfactor 100",
    (
        "ALTER TABLE products RESET (fillfactor)",
        f"CREATE INDEX IF NOT EXISTS {STOCK_INDEX} ON products (stock, sku)",
    ),
)


@dataclass
class Figures:
    batch_s: list[float]
    report_s: list[float]
    pages_grown: int = 0
    wal_bytes: int = 0
    batches: int = 0


def grow(bdb: BenchDB, products: int) -> None:
    """Add products up to `products`, one in a hundred below the report's threshold."""
    conn = bdb.admin_connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO products (sku, name, price_cents, stock) "
                "SELECT 'HOT-' || lpad(g::text, 8, '0'), 'Product ' || g, 100, "
                "CASE WHEN g %% 100 = 0 THEN g %% %(threshold)s ELSE 1000 + g %% 1000 END "
                "FROM generate_series(1, %(extra)s) AS g",
                {"threshold": THRESHOLD, "extra": max(0, products - PRODUCTS)},
            )
    finally:
        conn.close()


def run(
    bdb: BenchDB, *, products: int, batches: int, reads: int, rounds: int
) -> list[tuple[Schema, Figures]]:
    grow(bdb, products)
    admin = bdb.admin_connect()
    admin.autocommit = True
    db = Database.from_settings(bdb.app_settings())
    picks = rng("hot_updates")
    ids = itertools.count()
    occurred = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def batch() -> list[StockEventIn]:
        return [
            StockEventIn(f"hot-{next(ids)}", sku(picks.randrange(PRODUCTS)), 1, "restock", occurred)
            for _ in range(BATCH)
        ]

    def ingest(_: int) -> None:
        with db.unit_of_work() as uow:
            assert not ingest_stock_events(uow, batch()).rejected

    def report(_: int) -> None:
        with db.unit_of_work(read_only=True) as uow:
            assert reports.low_stock(uow, threshold=THRESHOLD)

    def where() -> tuple[int, str]:
        """The table's size in pages, and the WAL's position."""
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_relation_size('products') / current_setting('block_size')::int, "
                "pg_current_wal_lsn()"
            )
            pages, lsn = cur.fetchone()
        return int(pages), str(lsn)

    def wal_since(lsn: str) -> int:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn,))
            (written,) = cur.fetchone()
        return int(written)

    def block(schema: Schema, figures: Figures) -> None:
        with admin.cursor() as cur:
            for statement in schema.ddl:
                cur.execute(statement)
            cur.execute("VACUUM FULL products")
            cur.execute("ANALYZE products")
        timed(ingest, max(1, batches // 10))  # warm-up, untimed
        pages, lsn = where()
        figures.batch_s += timed(ingest, batches)
        figures.wal_bytes += wal_since(lsn)
        figures.pages_grown += where()[0] - pages
        figures.batches += batches
        figures.report_s += timed(report, reads)

    results = [(schema, Figures([], [])) for schema in (HEAD, BEFORE)]
    try:
        for r in range(rounds):
            for k in range(len(results)):
                block(*results[(r + k) % len(results)])
    finally:
        with admin.cursor() as cur:  # leave the database at head, whatever happened
            for statement in HEAD.ddl:
                cur.execute(statement)
        admin.close()
        db.dispose()
    return results


def render(results: list[tuple[Schema, Figures]], *, products: int, tls: bool, command: str) -> str:
    base = results[-1][1]
    base_batch, base_report = median(base.batch_s), median(base.report_s)
    lines = [
        f"Stock writes and the low-stock report, {products:,} products; medians; `{command}`",
        f"Machine: {machine(tls=tls)}",
        "",
        "| schema | ms per 10-event batch | ratio | ms per low-stock report | ratio "
        "| WAL bytes per batch | pages grown per 1,000 batches |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for schema, figures in results:
        batch_ms, report_ms = median(figures.batch_s) * 1e3, median(figures.report_s) * 1e3
        grown = figures.pages_grown * 1000 / figures.batches
        wal = figures.wal_bytes / figures.batches
        lines.append(
            f"| {schema.name} | {batch_ms:.2f} | {batch_ms / (base_batch * 1e3):.2f} | "
            f"{report_ms:.2f} | {report_ms / (base_report * 1e3):.2f} | {wal:,.0f} | "
            f"{grown:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hot_updates", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; checks, not numbers")
    parser.add_argument("--products", type=int, help="catalogue size (default 100,000)")
    args = parser.parse_args(argv)
    sizes: dict[str, int] = (
        {"products": 2_000, "batches": 10, "reads": 2, "rounds": 2}
        if args.smoke
        else {"products": 100_000, "batches": 400, "reads": 20, "rounds": 10}
    )
    if args.products is not None:
        if args.products < PRODUCTS:
            parser.error(f"--products must be at least {PRODUCTS} (the seeded catalogue)")
        sizes["products"] = args.products
    with throwaway_bench_database("hot") as bdb:
        results = run(bdb, **sizes)
        tls = bdb.ca_file is not None
    command = " ".join(["python -m bench.hot_updates", *(argv or sys.argv[1:])])
    print(render(results, products=sizes["products"], tls=tls, command=command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
