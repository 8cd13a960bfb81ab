"""B1: point read of a product by SKU, through the read-only unit of work vs a psycopg2 cursor."""

from __future__ import annotations

from dataclasses import replace

import psycopg2
import sqlalchemy as sa

from dataaccess import Database, create_engine, tables

from .harness import PRODUCTS, BenchDB, Row, Sizes, median, rng, rotate, sku, timed

SELECT = (
    "SELECT id, sku, name, price_cents, stock, created_at, updated_at FROM products WHERE sku = %s"
)


def run(bdb: BenchDB, sizes: Sizes) -> Row:
    picks = [sku(rng("B1").randrange(PRODUCTS)) for _ in range(sizes.reads)]
    db = Database.from_settings(bdb.app_settings())
    # The same Database pinging on every checkout (DB_POOL_PRE_PING_IDLE=0, SQLAlchemy's
    # pool_pre_ping): what this path cost before the idle-only ping.
    pinged = Database.from_settings(replace(bdb.app_settings(), pool_pre_ping_idle=0))
    # SQLAlchemy Core on one held connection, same statement and transaction shape:
    # the floor of SQLAlchemy itself, without the pool, the session or the ORM.
    held = create_engine(bdb.app_settings()).connect()
    by_sku = sa.select(tables.products).where(tables.products.c.sku == sa.bindparam("sku"))
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

        def ours_auto_op(i: int) -> None:
            with db.unit_of_work(read_only=True, autocommit=True) as uow:
                product = uow.products.get_by_sku(picks[i % len(picks)])
                assert product is not None

        def pinged_op(i: int) -> None:
            with pinged.unit_of_work(read_only=True) as uow:
                product = uow.products.get_by_sku(picks[i % len(picks)])
                assert product is not None

        def core_op(i: int) -> None:
            with held.begin():
                assert held.execute(by_sku, {"sku": picks[i % len(picks)]}).one()

        def base_op(i: int) -> None:
            with conn.cursor() as cur:
                cur.execute(SELECT, (picks[i % len(picks)],))
                assert cur.fetchone() is not None
            conn.rollback()

        def auto_op(i: int) -> None:
            with auto.cursor() as cur:
                cur.execute(SELECT, (picks[i % len(picks)],))
                assert cur.fetchone() is not None

        # One rotation for all six, so every comparison below is within the same drift.
        ours, base, always, core, single, ours_single = rotate(
            [
                lambda n: timed(ours_op, n),
                lambda n: timed(base_op, n),
                lambda n: timed(pinged_op, n),
                lambda n: timed(core_op, n),
                lambda n: timed(auto_op, n),
                lambda n: timed(ours_auto_op, n),
            ],
            total=sizes.reads,
            rounds=sizes.rounds,
        )
    finally:
        conn.close()
        auto.close()
        held.close()
        db.dispose()
        pinged.dispose()
    ours_us, base_us, single_us = median(ours) * 1e6, median(base) * 1e6, median(single) * 1e6
    always_us, core_us = median(always) * 1e6, median(core) * 1e6
    ours_single_us = median(ours_single) * 1e6
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
            "ours: `db.unit_of_work(read_only=True)` + `uow.products.get_by_sku`: pool "
            "checkout (pinged only after 5 s idle), BEGIN READ ONLY, a prebuilt SQLAlchemy "
            "Core SELECT, ROLLBACK, and a frozen `ProductRecord` per read.",
            "baseline: one psycopg2 connection, `set_session(readonly=True)`, "
            "cursor.execute + fetchone + rollback: the same three round trips. Ours, the "
            "baseline and the four variants below take turns in one rotation.",
            f"ours with a ping on every checkout (`DB_POOL_PRE_PING_IDLE=0`, the behaviour "
            f"before the fix): {always_us:.0f} µs (ratio {always_us / base_us:.2f}); the ping "
            "is one more round trip (SELECT 1) per checkout. Before the read-only flag was "
            "reset to the server default at checkin, psycopg2 also sent a SET when the ping "
            "switched autocommit on: two.",
            f"SQLAlchemy Core, the same statement in the same transaction on one held "
            f"connection (no pool, no unit of work): {core_us:.0f} µs (ratio "
            f"{core_us / base_us:.2f}), SQLAlchemy's own floor for this read. What ours adds "
            "to it is the pool checkout and return and the unit of work: "
            f"{ours_us - core_us:+.0f} µs per read on this CPU. On loopback a round trip costs "
            "tens of µs, so Python time is a large share of a read; against Aurora across "
            "the network (hundreds of µs per round trip, plus TLS) the same absolute cost is "
            "a small one.",
            f"without a transaction on both sides: ours with `autocommit=True` (what the "
            f"API's GET views use: the SELECT alone, one round trip) {ours_single_us:.0f} µs, "
            f"psycopg2 in autocommit {single_us:.0f} µs: ratio "
            f"{ours_single_us / single_us:.2f}; ours in autocommit against the baseline's "
            f"transaction: {ours_single_us / base_us:.2f}.",
        ],
        extra={
            "autocommit_us": single_us,
            "ours_autocommit_us": ours_single_us,
            "ping_every_checkout_us": always_us,
            "core_us": core_us,
        },
    )
