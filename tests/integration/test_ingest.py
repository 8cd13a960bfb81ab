"""Batch ingest of stock events on the real, migrated database."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from dataaccess import services
from dataaccess.errors import InsufficientStockError, InvalidRequestError, ProductNotFoundError
from dataaccess.ingest import IngestResult, LedgerRaceError, ingest_stock_events
from dataaccess.models import StockEvent
from dataaccess.services import StockEventIn

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def event(sku: str, delta: int, event_id: str | None = None) -> StockEventIn:
    return StockEventIn(uuid.uuid4().hex if event_id is None else event_id, sku, delta, "t", NOW)


def stock(db, sku: str) -> int:
    with db.unit_of_work(read_only=True) as uow:
        return services.get_product(uow, sku).stock


def ledger_ids(db) -> set[str]:
    with db.unit_of_work(read_only=True) as uow:
        return set(uow.session.scalars(select(StockEvent.event_id)))


@pytest.fixture
def skus(db) -> list[str]:
    """Two products, A with 10 in stock and B with 0."""
    names = [f"A-{uuid.uuid4().hex[:6]}", f"B-{uuid.uuid4().hex[:6]}"]
    with db.unit_of_work() as uow:
        services.create_product(uow, sku=names[0], name="a", price_cents=1, stock=10)
    with db.unit_of_work() as uow:
        services.create_product(uow, sku=names[1], name="b", price_cents=1, stock=0)
    return names


def test_applies_each_event_and_nets_per_product(db, skus):
    a, b = skus
    events = [event(a, 5), event(b, 3), event(a, -2), event(b, 4)]
    with db.unit_of_work() as uow:
        result = ingest_stock_events(uow, events)
    assert result.applied == [e.event_id for e in events]
    assert result.duplicates == []
    assert result.rejected == []
    assert (stock(db, a), stock(db, b)) == (13, 7)
    assert ledger_ids(db) == {e.event_id for e in events}


def test_duplicates_within_a_batch_apply_once(db, skus):
    a, _ = skus
    first = event(a, 4, "dup-1")
    with db.unit_of_work() as uow:
        result = ingest_stock_events(uow, [first, event(a, 4, "dup-1"), event(a, 99, "dup-1")])
    assert result.applied == ["dup-1"]
    assert result.duplicates == ["dup-1", "dup-1"]
    assert stock(db, a) == 14


def test_duplicates_across_batches_and_with_the_single_event_service(db, skus):
    a, _ = skus
    with db.unit_of_work() as uow:
        assert services.apply_stock_event(uow, event(a, 1, "single"))
    with db.unit_of_work() as uow:
        ingest_stock_events(uow, [event(a, 2, "batch-1")])
    with db.unit_of_work() as uow:
        result = ingest_stock_events(
            uow, [event(a, 1, "single"), event(a, 2, "batch-1"), event(a, 3, "new")]
        )
    assert result.applied == ["new"]
    assert result.duplicates == ["single", "batch-1"]
    assert stock(db, a) == 10 + 1 + 2 + 3
    with db.unit_of_work() as uow:
        assert not services.apply_stock_event(uow, event(a, 3, "new"))


def test_unknown_sku_is_rejected_and_the_rest_applies(db, skus):
    a, _ = skus
    events = [event(a, 1), event("NO-SUCH-SKU", 5, "ghost"), event(a, 1)]
    with db.unit_of_work() as uow:
        result = ingest_stock_events(uow, events)
    assert [r.event_id for r in result.rejected] == ["ghost"]
    assert isinstance(result.rejected[0].error, ProductNotFoundError)
    assert result.applied == [events[0].event_id, events[2].event_id]
    assert stock(db, a) == 12
    assert "ghost" not in ledger_ids(db)


def test_an_event_that_would_go_negative_is_rejected_in_batch_order(db, skus):
    a, b = skus
    # A: 10 -> 4 -> (-7 refused) -> 5 -> 0.  B: (-1 refused at 0) -> 2.
    events = [
        event(a, -6, "a1"),
        event(b, -1, "b1"),
        event(a, -7, "a2"),
        event(a, 1, "a3"),
        event(b, 2, "b2"),
        event(a, -5, "a4"),
    ]
    with db.unit_of_work() as uow:
        result = ingest_stock_events(uow, events)
    assert result.applied == ["a1", "a3", "b2", "a4"]
    assert {r.event_id for r in result.rejected} == {"b1", "a2"}
    assert all(isinstance(r.error, InsufficientStockError) for r in result.rejected)
    assert (stock(db, a), stock(db, b)) == (0, 2)
    # Not in the ledger, so a retry after a restock applies them.
    assert ledger_ids(db).isdisjoint({"a2", "b1"})
    with db.unit_of_work() as uow:
        retry = ingest_stock_events(uow, [event(b, -1, "b1")])
    assert retry.applied == ["b1"]
    assert stock(db, b) == 1


def test_same_rule_as_the_single_event_service(db, skus):
    """A dip below zero inside a batch is refused even when the batch nets positive."""
    a, _ = skus
    with db.unit_of_work() as uow:
        result = ingest_stock_events(uow, [event(a, -11, "dip"), event(a, 20, "up")])
    assert result.applied == ["up"]
    assert [r.event_id for r in result.rejected] == ["dip"]
    assert stock(db, a) == 30


def test_invalid_events_are_rejected_without_a_query(db, skus):
    a, _ = skus
    with db.unit_of_work() as uow:
        result = ingest_stock_events(uow, [event(a, 1, ""), event(a, 2**31)])
    assert len(result.rejected) == 2
    assert all(isinstance(r.error, InvalidRequestError) for r in result.rejected)
    assert stock(db, a) == 10


def test_chunks_commit_separately_and_a_rerun_is_a_no_op(db, skus):
    a, b = skus
    events = [event(a if i % 2 else b, 1, f"e{i}") for i in range(25)]
    with db.unit_of_work() as uow:
        result = ingest_stock_events(uow, events, chunk_size=7)
    assert len(result.applied) == 25
    with db.unit_of_work() as uow:
        again = ingest_stock_events(uow, events, chunk_size=4)
    assert again.applied == []
    assert again.duplicates == [e.event_id for e in events]
    assert (stock(db, a), stock(db, b)) == (10 + 12, 13)


def test_chunk_size_must_be_positive(db):
    with db.unit_of_work() as uow, pytest.raises(InvalidRequestError):
        ingest_stock_events(uow, [], chunk_size=0)


@pytest.mark.slow
def test_concurrent_ingest_of_the_same_events_applies_each_once(db, skus):
    a, b = skus
    events = [event(a if i % 3 else b, 1, f"c{i}") for i in range(300)]
    results = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker(batch: list[StockEventIn]) -> None:
        try:
            barrier.wait()
            with db.unit_of_work() as uow:
                results.append(ingest_stock_events(uow, batch, chunk_size=50))
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(events,)),
        threading.Thread(target=worker, args=(list(reversed(events)),)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    applied = [eid for r in results for eid in r.applied]
    assert sorted(applied) == sorted(e.event_id for e in events)
    assert stock(db, a) + stock(db, b) == 10 + 300


def record_elsewhere(db, event_id: str, sku: str) -> None:
    """Another transaction records `event_id` for `sku` and commits."""
    with db.writer.begin() as conn:
        conn.execute(_LEDGER_ROW, {"event_id": event_id, "sku": sku})


_LEDGER_ROW = sa.text(
    "INSERT INTO stock_events (event_id, product_id, delta, reason, occurred_at) "
    "SELECT :event_id, id, 1, 'elsewhere', now() FROM products WHERE sku = :sku"
)


def test_an_id_recorded_by_another_transaction_mid_chunk_counts_as_a_duplicate(db, skus):
    """The one race the product locks cannot order: the same event id with another SKU.

    Another transaction records `race-1` for B while a chunk applies `race-1`
    (+5) then `r2` (-13) for A, which holds 10: the chunk's insert waits for
    that row, then skips it. `r2` only fitted because `race-1` was counted, so
    the chunk must decide again, knowing the ledger, and refuse `r2`.
    """
    a, b = skus
    other = db.writer.connect()
    other.execute(_LEDGER_ROW, {"event_id": "race-1", "sku": b})
    outcome: list[object] = []

    def ingest() -> None:
        try:
            with db.unit_of_work() as uow:
                events = [event(a, 5, "race-1"), event(a, -13, "r2")]
                outcome.append(ingest_stock_events(uow, events))
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=ingest)
    worker.start()
    worker.join(timeout=1)
    assert worker.is_alive(), "the chunk's insert should wait for the other transaction"
    other.commit()
    other.close()
    worker.join(timeout=30)
    (result,) = outcome
    assert isinstance(result, IngestResult), result
    assert (result.duplicates, result.applied) == (["race-1"], [])
    assert [(r.event_id, type(r.error)) for r in result.rejected] == [
        ("r2", InsufficientStockError)
    ]
    assert stock(db, a) == 10
    assert "r2" not in ledger_ids(db)


def fail_on_a_second_race(db, a: str, b: str) -> None:
    """Each time the chunk records its events, another transaction has just taken one of its ids."""
    taken: list[str] = []

    def before_insert(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().startswith("WITH accepted AS"):  # record_and_apply
            event_id = f"race-{len(taken) + 1}"
            taken.append(event_id)
            record_elsewhere(db, event_id, b)

    sa.event.listen(db.writer, "before_cursor_execute", before_insert)
    try:
        with db.unit_of_work() as uow:
            ingest_stock_events(uow, [event(a, 1, "race-1"), event(a, 1, "race-2"), event(a, 2)])
    finally:
        sa.event.remove(db.writer, "before_cursor_execute", before_insert)


def test_a_ledger_that_changes_again_under_the_second_run_fails_the_chunk(db, skus):
    a, b = skus
    with pytest.raises(LedgerRaceError):
        fail_on_a_second_race(db, a, b)
    assert stock(db, a) == 10
    assert ledger_ids(db) & {"race-1", "race-2"} == {"race-1", "race-2"}
