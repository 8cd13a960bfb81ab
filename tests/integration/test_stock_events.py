"""Stock events are applied exactly once, in the same transaction as their effect."""

import datetime as dt
import threading

import pytest

from dataaccess import services
from dataaccess.errors import InsufficientStockError, ProductNotFoundError
from dataaccess.services import StockEventIn

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


@pytest.fixture
def product(db):
    with db.unit_of_work() as uow:
        services.create_product(uow, sku="EV-1", name="Evented", price_cents=10, stock=5)
    return "EV-1"


def apply(db, event):
    with db.unit_of_work() as uow:
        return services.apply_stock_event(uow, event)


def stock(db, sku):
    with db.unit_of_work(read_only=True) as uow:
        return services.get_product(uow, sku).stock


def test_same_event_twice_is_applied_once(db, product):
    event = StockEventIn("evt-1", product, 7, "restock", NOW)
    assert apply(db, event) is True
    assert apply(db, event) is False
    assert stock(db, product) == 12


def test_unknown_sku_leaves_no_ledger_row(db, product):
    with pytest.raises(ProductNotFoundError):
        apply(db, StockEventIn("evt-2", "NOPE", 1, "restock", NOW))
    # The id is still free: once the product exists the event can be applied.
    with db.unit_of_work() as uow:
        services.create_product(uow, sku="NOPE", name="Late", price_cents=1, stock=0)
    assert apply(db, StockEventIn("evt-2", "NOPE", 1, "restock", NOW)) is True


def test_event_that_would_go_negative_is_refused_whole(db, product):
    with pytest.raises(InsufficientStockError):
        apply(db, StockEventIn("evt-3", product, -6, "adjustment", NOW))
    assert stock(db, product) == 5
    assert apply(db, StockEventIn("evt-3", product, -5, "adjustment", NOW)) is True
    assert stock(db, product) == 0


def test_concurrent_deliveries_of_one_event_apply_it_once(db, product):
    barrier = threading.Barrier(6)
    outcomes = []

    def deliver():
        barrier.wait()
        outcomes.append(apply(db, StockEventIn("evt-race", product, 3, "restock", NOW)))

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [False] * 5 + [True]
    assert stock(db, product) == 8
