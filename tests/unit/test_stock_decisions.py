"""`ingest.decide`, the one place a stock event is accepted or rejected: no database."""

from __future__ import annotations

import datetime as dt

import pytest

from dataaccess.errors import InsufficientStockError, InvalidRequestError, ProductNotFoundError
from dataaccess.ingest import decide
from dataaccess.repositories import NewStockEvent, StockLevel
from dataaccess.services import StockEventIn
from dataaccess.tables import MAX_INT32

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
RED = StockLevel(id=1, price_cents=100, stock=10)
BLUE = StockLevel(id=2, price_cents=200, stock=0)
LEVELS = {"RED": RED, "BLUE": BLUE}


def event(event_id: str, sku: str, delta: int) -> StockEventIn:
    return StockEventIn(event_id, sku, delta, "test", NOW)


def outcome(events: list[StockEventIn], in_ledger: frozenset[str] = frozenset()):
    accepted, result = decide(events, LEVELS, set(in_ledger))
    rejected = [(r.event_id, type(r.error)) for r in result.rejected]
    return accepted, result.applied, result.duplicates, rejected


def test_accepted_events_carry_their_product_id_in_batch_order():
    accepted, applied, duplicates, rejected = outcome(
        [event("a", "RED", -3), event("b", "BLUE", 4), event("c", "RED", 1)]
    )
    assert accepted == [
        NewStockEvent("a", 1, -3, "test", NOW),
        NewStockEvent("b", 2, 4, "test", NOW),
        NewStockEvent("c", 1, 1, "test", NOW),
    ]
    assert (applied, duplicates, rejected) == (["a", "b", "c"], [], [])


@pytest.mark.parametrize(
    ("delta", "fits"),
    [
        (-10, True),  # to exactly zero
        (-11, False),  # one below
        (MAX_INT32 - 10, True),  # to exactly the column's maximum
        (MAX_INT32 - 9, False),  # one past it
    ],
)
def test_stock_bounds_are_inclusive(delta, fits):
    _, applied, _, rejected = outcome([event("a", "RED", delta)])
    if fits:
        assert (applied, rejected) == (["a"], [])
    else:
        error = InsufficientStockError if delta < 0 else InvalidRequestError
        assert (applied, rejected) == ([], [("a", error)])


def test_events_of_one_product_apply_in_batch_order_on_the_running_stock():
    """-8 fits on 10; the next -8 does not on 2, and does not count; +5 then makes 7; -7 fits."""
    accepted, applied, _, rejected = outcome(
        [
            event("a", "RED", -8),
            event("b", "RED", -8),
            event("c", "RED", 5),
            event("d", "RED", -7),
        ]
    )
    assert applied == ["a", "c", "d"]
    assert rejected == [("b", InsufficientStockError)]
    assert sum(e.delta for e in accepted) == -10


def test_an_insufficient_stock_error_names_what_was_asked_and_what_there_was():
    _, result = decide([event("a", "RED", -4), event("b", "RED", -7)], LEVELS, set())
    (rejection,) = result.rejected
    assert isinstance(rejection.error, InsufficientStockError)
    assert (rejection.error.sku, rejection.error.requested, rejection.error.available) == (
        "RED",
        7,
        6,
    )


def test_an_unknown_sku_is_rejected_alone():
    _, applied, _, rejected = outcome([event("a", "GREEN", 1), event("b", "BLUE", 1)])
    assert (applied, rejected) == (["b"], [("a", ProductNotFoundError)])


def test_ids_in_the_ledger_are_duplicates_and_their_delta_does_not_count():
    """Counting the duplicate's +5 would let -12 through on a stock of 10."""
    accepted, applied, duplicates, rejected = outcome(
        [event("seen", "RED", 5), event("b", "RED", -12)], in_ledger=frozenset({"seen"})
    )
    assert (accepted, applied, duplicates) == ([], [], ["seen"])
    assert rejected == [("b", InsufficientStockError)]


def test_an_id_in_the_ledger_is_a_duplicate_even_when_its_sku_is_unknown_now():
    _, applied, duplicates, rejected = outcome(
        [event("seen", "GREEN", 1)], in_ledger=frozenset({"seen"})
    )
    assert (applied, duplicates, rejected) == ([], ["seen"], [])


def test_every_event_gets_exactly_one_outcome():
    events = [
        event(f"e{i}", sku, delta)
        for i, (sku, delta) in enumerate(
            [("RED", -6), ("RED", -6), ("BLUE", 3), ("GREEN", 1), ("BLUE", -4), ("RED", 2)]
        )
    ]
    _, applied, duplicates, rejected = outcome(events, in_ledger=frozenset({"e5"}))
    ids = applied + duplicates + [event_id for event_id, _ in rejected]
    assert sorted(ids) == sorted(e.event_id for e in events)
    assert applied == ["e0", "e2"]
    assert duplicates == ["e5"]
    assert rejected == [
        ("e1", InsufficientStockError),
        ("e3", ProductNotFoundError),
        ("e4", InsufficientStockError),
    ]


def test_the_locked_levels_are_not_changed():
    levels = dict(LEVELS)
    decide([event("a", "RED", -3)], levels, set())
    assert levels == LEVELS
