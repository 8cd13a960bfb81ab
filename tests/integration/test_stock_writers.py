"""Every writer of stock (orders, cancellations, event ingest) locks products in one order.

Orders lock their SKUs A, Z in sku order; ingests here name them Z first, and
their event ids sort Z first too. Without a shared lock order this mix
deadlocks within seconds; with it, everything queues and the books balance.
"""

import datetime as dt
import secrets
import threading
import time
from dataclasses import replace

import pytest
import sqlalchemy as sa

from dataaccess import Database, services
from dataaccess.errors import InsufficientStockError
from dataaccess.ingest import ingest_stock_events
from dataaccess.services import LineRequest, StockEventIn

ROUNDS = 25
NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


@pytest.fixture
def wide_db(app_settings):
    database = Database.from_settings(replace(app_settings, pool_size=8, max_overflow=0))
    yield database
    database.dispose()


def test_orders_cancellations_and_ingests_never_deadlock(wide_db):
    db = wide_db
    with db.unit_of_work() as uow:
        customer = services.create_customer(uow, email="mix@example.com", name="Mix").id
    for sku in ("A", "Z"):
        with db.unit_of_work() as uow:
            services.create_product(uow, sku=sku, name=sku, price_cents=1, stock=50)
    errors: list[BaseException] = []
    sold = {"A": 0, "Z": 0}
    restocked = {"A": 0, "Z": 0}
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def buyer(_: int) -> None:
        barrier.wait()
        for _ in range(ROUNDS):
            try:
                with db.unit_of_work() as uow:
                    placed = services.place_order(
                        uow, customer_id=customer, lines=[LineRequest("A", 1), LineRequest("Z", 1)]
                    )
            except InsufficientStockError:
                continue
            except BaseException as exc:
                errors.append(exc)
                return
            if placed.order.id % 3 == 0:
                with db.unit_of_work() as uow:
                    services.cancel_order(uow, placed.order.id)
                continue
            with lock:
                sold["A"] += 1
                sold["Z"] += 1

    def restocker(worker: int) -> None:
        barrier.wait()
        for n in range(ROUNDS):
            tag = f"{worker}-{n}-{secrets.token_hex(3)}"
            events = [
                StockEventIn(f"0-{tag}-z", "Z", 2, "restock", NOW),
                StockEventIn(f"1-{tag}-a", "A", 2, "restock", NOW),
            ]
            try:
                with db.unit_of_work() as uow:
                    result = ingest_stock_events(uow, events)
            except BaseException as exc:
                errors.append(exc)
                return
            assert not result.rejected
            with lock:
                restocked["A"] += 2
                restocked["Z"] += 2

    threads = [threading.Thread(target=buyer, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=restocker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not errors, errors  # a deadlock surfaces here as OperationalError (40P01)
    with db.writer.connect() as conn:
        stock = dict(conn.execute(sa.text("SELECT sku, stock FROM products")).all())
    for sku in ("A", "Z"):
        assert stock[sku] == 50 - sold[sku] + restocked[sku]


def _products_updates(admin) -> tuple[int, int]:
    admin.execute("SELECT pg_stat_clear_snapshot()")
    return admin.execute(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'products'"
    ).fetchone()


def test_every_stock_write_is_a_hot_update(db, admin):
    # HOT: the new row version stays in its page and no index gets an entry, which
    # needs no index on a column the writer changes (migration 0009).
    covered = admin.execute(
        "SELECT i.indexrelid::regclass::text FROM pg_index AS i "
        "JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = 'products'::regclass AND a.attname IN ('stock', 'updated_at')"
    ).fetchall()
    assert covered == []
    (options,) = admin.execute(
        "SELECT reloptions FROM pg_class WHERE oid = 'products'::regclass"
    ).fetchone()
    assert options == ["fillfactor=90"]

    with db.unit_of_work() as uow:
        customer = services.create_customer(uow, email="hot@example.com", name="Hot").id
        services.create_product(uow, sku="HOT", name="Hot", price_cents=1, stock=10)
    before = _products_updates(admin)
    with db.unit_of_work() as uow:
        placed = services.place_order(uow, customer_id=customer, lines=[LineRequest("HOT", 3)])
    with db.unit_of_work() as uow:
        services.cancel_order(uow, placed.order.id)
    with db.unit_of_work() as uow:
        assert ingest_stock_events(uow, [StockEventIn("hot-1", "HOT", 5, "restock", NOW)]).applied
    db.dispose()  # a backend flushes its statistics when it ends

    writes = 3  # the order's take, the cancellation's return, the event's restock
    deadline = time.monotonic() + 10
    while (after := _products_updates(admin))[0] - before[0] < writes:
        assert time.monotonic() < deadline, "the writes' statistics never arrived"
        time.sleep(0.05)
    updated, hot = after[0] - before[0], after[1] - before[1]
    assert (updated, hot) == (writes, writes)
    with db.unit_of_work(read_only=True) as uow:
        assert uow.products.get_by_sku("HOT").stock == 15
