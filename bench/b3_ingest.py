"""B3: ingest stock events through dataaccess.ingest vs psycopg2 execute_values."""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict

import psycopg2
import psycopg2.extras

from dataaccess import Database
from dataaccess.ingest import DEFAULT_CHUNK_SIZE, ingest_stock_events
from dataaccess.services import StockEventIn

from .harness import PRODUCTS, BenchDB, Row, Sizes, median, rng, sku

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DUPLICATE_SHARE = 0.02  # redelivered events, already in the ledger: no effect on either side

_INSERT = (
    "INSERT INTO stock_events (event_id, product_id, delta, reason, occurred_at) "
    "SELECT v.event_id, p.id, v.delta, v.reason, v.occurred_at "
    "FROM (VALUES %s) AS v(event_id, sku, delta, reason, occurred_at) "
    "JOIN products AS p ON p.sku = v.sku "
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id, product_id, delta"
)
_UPDATE = (
    "UPDATE products AS p SET stock = p.stock + v.delta, updated_at = now() "
    "FROM (VALUES %s) AS v(id, delta) WHERE p.id = v.id"
)


def events_for(side: str, round_: int, n: int) -> list[StockEventIn]:
    r = rng(f"B3-{round_}")
    out: list[StockEventIn] = []
    for i in range(n):
        if out and r.random() < DUPLICATE_SHARE:
            out.append(out[r.randrange(len(out))])
            continue
        out.append(
            StockEventIn(
                f"{side}-{round_}-{i}", sku(r.randrange(PRODUCTS)), r.randint(-5, 10), "bench", NOW
            )
        )
    return out


def ingest_by_hand(conn: psycopg2.extensions.connection, events: list[StockEventIn]) -> int:
    """Ledger rows and stock changes per chunk, same ON CONFLICT rule, one commit per chunk."""
    applied = 0
    for start in range(0, len(events), DEFAULT_CHUNK_SIZE):
        chunk = events[start : start + DEFAULT_CHUNK_SIZE]
        with conn, conn.cursor() as cur:
            inserted = psycopg2.extras.execute_values(
                cur,
                _INSERT,
                [(e.event_id, e.sku, e.delta, e.reason, e.occurred_at) for e in chunk],
                template="(%s, %s, %s::integer, %s, %s::timestamptz)",
                page_size=len(chunk),
                fetch=True,
            )
            net: dict[int, int] = defaultdict(int)
            for _, product_id, delta in inserted:
                net[product_id] += delta
            if net:
                psycopg2.extras.execute_values(
                    cur,
                    _UPDATE,
                    sorted(net.items()),
                    template="(%s::bigint, %s::integer)",
                    page_size=len(net),
                )
            applied += len(inserted)
    return applied


def run(bdb: BenchDB, sizes: Sizes) -> Row:
    db = Database.from_settings(bdb.app_settings())
    conn = psycopg2.connect(**bdb.connect_kwargs())
    per_round = max(1, sizes.events // sizes.rounds)
    ours_rates: list[float] = []
    base_rates: list[float] = []

    def ours(events: list[StockEventIn]) -> float:
        start = time.perf_counter()
        with db.unit_of_work() as uow:
            result = ingest_stock_events(uow, events)
        assert not result.rejected
        return len(events) / (time.perf_counter() - start)

    def base(events: list[StockEventIn]) -> float:
        start = time.perf_counter()
        ingest_by_hand(conn, events)
        return len(events) / (time.perf_counter() - start)

    try:
        warm = max(1, per_round // 5)
        ours(events_for("ours", -1, warm))
        base(events_for("base", -1, warm))
        for r in range(sizes.rounds):
            pair = [
                (ours, ours_rates, events_for("ours", r, per_round)),
                (base, base_rates, events_for("base", r, per_round)),
            ]
            for side, rates, events in pair if r % 2 == 0 else reversed(pair):
                rates.append(side(events))
    finally:
        conn.close()
        db.dispose()
    return Row(
        key="B3",
        workload=f"ingest {sizes.rounds * per_round:,} stock events",
        ours=median(ours_rates),
        baseline=median(base_rates),
        unit="events/s, median of rounds",
        goal="throughput ratio ≥ 0.8",
        better="higher",
        limit=0.8,
        notes=[
            f"{sizes.rounds} rounds of {per_round:,} events per side, chunks of "
            f"{DEFAULT_CHUNK_SIZE}, one commit per chunk, {DUPLICATE_SHARE:.0%} redelivered "
            "duplicates; events spread over "
            f"{PRODUCTS} products.",
            "ours: `dataaccess.ingest.ingest_stock_events` (its docstring tells how): per "
            "chunk, the products locked in sku order, the events decided on the locked stock, "
            "one statement that records them and moves the stock, and a commit.",
            "baseline: psycopg2 execute_values INSERT ... SELECT FROM (VALUES ...) JOIN products "
            "ON CONFLICT DO NOTHING RETURNING, then one execute_values UPDATE with the net "
            "delta per product (a negative stock would fail the whole chunk on the CHECK).",
        ],
    )
