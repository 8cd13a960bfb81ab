"""B1: point read of a product by SKU, through the read-only unit of work vs a psycopg2 cursor."""

from __future__ import annotations

import psycopg2

from dataaccess import Database, create_engine

from .harness import PRODUCTS, BenchDB, Row, Sizes, alternate, median, rng, sku, timed

SELECT = (
    "SELECT id, sku, name, price_cents, stock, created_at, updated_at FROM products WHERE sku = %s"
)


def run(bdb: BenchDB, sizes: Sizes) -> Row:
    picks = [sku(rng("B1").randrange(PRODUCTS)) for _ in range(sizes.reads)]
    db = Database.from_settings(bdb.app_settings())
    # The same Database without pool_pre_ping: what the ping costs per checkout.
    unpinged = Database(create_engine(bdb.app_settings(), pool_pre_ping=False))
    conn = psycopg2.connect(**bdb.connect_kwargs())
    # Same transaction shape as ours: psycopg2 then sends BEGIN READ ONLY itself.
    conn.set_session(readonly=True)
    auto = psycopg2.connect(**bdb.connect_kwargs())
    auto.autocommit = True
    try:

        def ours_op(i: int) -> None:
            with db.unit_of_work(read_only=True) as uow:
                product = uow.products.get_by_sku(picks[i % len(picks)])
                assert product is not None

        def unpinged_op(i: int) -> None:
            with unpinged.unit_of_work(read_only=True) as uow:
                product = uow.products.get_by_sku(picks[i % len(picks)])
                assert product is not None

        def base_op(i: int) -> None:
            with conn.cursor() as cur:
                cur.execute(SELECT, (picks[i % len(picks)],))
                assert cur.fetchone() is not None
            conn.rollback()

        def auto_op(i: int) -> None:
            with auto.cursor() as cur:
                cur.execute(SELECT, (picks[i % len(picks)],))
                assert cur.fetchone() is not None

        ours, base = alternate(
            lambda n: timed(ours_op, n),
            lambda n: timed(base_op, n),
            total=sizes.reads,
            rounds=sizes.rounds,
        )
        nopre, single = alternate(
            lambda n: timed(unpinged_op, n),
            lambda n: timed(auto_op, n),
            total=max(sizes.reads // 5, 1),
            rounds=sizes.rounds,
        )
    finally:
        conn.close()
        auto.close()
        db.dispose()
        unpinged.dispose()
    nopre_us = median(nopre) * 1e6
    ours_us, base_us, single_us = median(ours) * 1e6, median(base) * 1e6, median(single) * 1e6
    return Row(
        key="B1",
        workload=f"point read of a product by SKU, {sizes.reads:,} times",
        ours=ours_us,
        baseline=base_us,
        unit="µs per read, median",
        goal="latency ratio ≤ 1.5",
        better="lower",
        limit=1.5,
        notes=[
            "ours: `db.unit_of_work(read_only=True)` + `uow.products.get_by_sku` "
            "(pool checkout with pre-ping, BEGIN READ ONLY, SELECT, ROLLBACK).",
            "baseline: one psycopg2 connection, `set_session(readonly=True)`, "
            "cursor.execute + fetchone + rollback (the same read-only transaction).",
            f"ours without pool_pre_ping: {nopre_us:.0f} µs (ratio {nopre_us / base_us:.2f}): "
            "the ping is a SELECT 1 plus, because psycopg2 flips autocommit for it on a "
            "read-only connection, a SET default_transaction_read_only: two extra round trips.",
            f"autocommit single-statement psycopg2 (no transaction at all): "
            f"{single_us:.0f} µs, ours/that = {ours_us / single_us:.2f}.",
        ],
        extra={"autocommit_us": single_us, "no_pre_ping_us": nopre_us},
    )
