"""Batch ingest of stock events: the set-based twin of `services.apply_stock_event`.

The same exactly-once rules, a chunk at a time instead of an event at a time:

- an event's ledger row and its stock change commit in the same transaction;
- an event id already in the ledger, or repeated within the batch (the first
  occurrence wins), is a duplicate and has no effect;
- an event is *rejected* (not applied, not recorded in the ledger, so a later
  retry may still apply it) when it is invalid, names an unknown SKU, or would
  take its product's stock below zero. Events of one product apply in batch
  order, exactly as if `apply_stock_event` were called for each in turn; a
  rejection never fails the rest of the batch, so an SQS consumer can report
  just the rejected ids as partial batch failures.

Per chunk, one statement locks the chunk's products FOR NO KEY UPDATE in sku
order (the order `place_order` locks in, so orders and ingests queue instead of
deadlocking), reads their stock and inserts the ledger rows with
``ON CONFLICT DO NOTHING``. With the locked stock in hand, each product's new
events are replayed in batch order in Python: those that would take stock below
zero (or past the column's range) are rejected and their own uncommitted ledger
rows removed. One ``UPDATE products ... FROM unnest`` then moves the stock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import text

from .errors import DomainError, InsufficientStockError, InvalidRequestError, ProductNotFoundError
from .models import MAX_INT32
from .uow import UnitOfWork

DEFAULT_CHUNK_SIZE = 1000

# One round trip: lock the chunk's products FOR NO KEY UPDATE in sku order (the
# order every writer of stock uses, see ProductRepository.lock_stock), reading
# their stock, and insert the ledger rows, sorted by event id so two ingests of
# overlapping batches wait on each other's keys in the same order. The CTE is
# row-locking, so PostgreSQL evaluates it once, before the insert that uses it,
# and after a lock wait it returns the row's latest stock.
_LOCK_AND_RECORD = text(
    """
    WITH locked AS (
        SELECT id, sku, stock FROM products
        WHERE sku = ANY(CAST(:skus AS text[]))
        ORDER BY sku
        FOR NO KEY UPDATE
    ), recorded AS (
        INSERT INTO stock_events (event_id, product_id, delta, reason, occurred_at)
        SELECT e.event_id, p.id, e.delta, e.reason, e.occurred_at
        FROM unnest(
            CAST(:ids AS text[]), CAST(:event_skus AS text[]), CAST(:deltas AS integer[]),
            CAST(:reasons AS text[]), CAST(:occurred AS timestamptz[])
        ) AS e(event_id, sku, delta, reason, occurred_at)
        JOIN locked AS p ON p.sku = e.sku
        ORDER BY e.event_id
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id
    )
    SELECT CAST(sku AS text), id, stock, CAST(NULL AS text) FROM locked
    UNION ALL
    SELECT NULL, NULL, NULL, event_id FROM recorded
    """
)


@dataclass(frozen=True)
class StockEventIn:
    event_id: str
    sku: str
    delta: int
    reason: str
    occurred_at: dt.datetime


@dataclass(frozen=True)
class RejectedEvent:
    event_id: str
    error: DomainError  # ProductNotFoundError, InsufficientStockError or InvalidRequestError


@dataclass
class IngestResult:
    """Which event ids a batch applied, found already applied, or rejected (in batch order)."""

    applied: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[RejectedEvent] = field(default_factory=list)

    def extend(self, other: IngestResult) -> None:
        self.applied.extend(other.applied)
        self.duplicates.extend(other.duplicates)
        self.rejected.extend(other.rejected)


def ingest_stock_events(
    uow: UnitOfWork, events: Iterable[StockEventIn], *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> IngestResult:
    """Apply each event exactly once, committing once per chunk of `chunk_size` events.

    A chunk that fails (a lost connection, a deadlock) rolls back alone: chunks
    committed before it stay applied, and running the same batch again is safe.
    """
    if chunk_size < 1:
        raise InvalidRequestError(f"chunk_size must be at least 1; got {chunk_size}")
    result = IngestResult()
    seen: set[str] = set()
    chunk: list[StockEventIn] = []
    for event in events:
        problem = _invalid(event)
        if problem is not None:
            result.rejected.append(RejectedEvent(event.event_id, problem))
        elif event.event_id in seen:
            result.duplicates.append(event.event_id)
        else:
            seen.add(event.event_id)
            chunk.append(event)
            if len(chunk) >= chunk_size:
                result.extend(_ingest_chunk(uow, chunk))
                chunk = []
    if chunk:
        result.extend(_ingest_chunk(uow, chunk))
    return result


def apply_stock_event(uow: UnitOfWork, event: StockEventIn) -> bool:
    """Apply one stock movement exactly once; False when its id was applied before.

    The batch path with a batch of one, so there is one set of exactly-once
    rules: the ledger row and the stock change commit together, and an unknown
    SKU or a stock that would go below zero raises instead of being recorded.
    """
    result = ingest_stock_events(uow, [event])
    if result.rejected:
        raise result.rejected[0].error
    return bool(result.applied)


def _invalid(event: StockEventIn) -> DomainError | None:
    if not event.event_id:
        return InvalidRequestError("event_id must not be empty")
    if not -MAX_INT32 <= event.delta <= MAX_INT32:
        return InvalidRequestError(
            f"delta of event {event.event_id} must be between {-MAX_INT32} and {MAX_INT32}"
        )
    return None


def _ingest_chunk(uow: UnitOfWork, chunk: Sequence[StockEventIn]) -> IngestResult:
    """One transaction: lock the products, write the ledger rows, move the stock."""
    rows = uow.connection.execute(
        _LOCK_AND_RECORD,
        {
            "skus": sorted({e.sku for e in chunk}),
            "ids": [e.event_id for e in chunk],
            "event_skus": [e.sku for e in chunk],
            "deltas": [e.delta for e in chunk],
            "reasons": [e.reason for e in chunk],
            "occurred": [e.occurred_at for e in chunk],
        },
    ).all()
    product_ids = {sku: pid for sku, pid, _, event_id in rows if event_id is None}
    stock = {sku: level for sku, _, level, event_id in rows if event_id is None}
    inserted = {event_id for _, _, _, event_id in rows if event_id is not None}
    missing = [e.event_id for e in chunk if e.event_id not in inserted]
    in_ledger = uow.stock_events.recorded(missing)

    # The rows are locked, so this stock is the truth until we commit: replay
    # each product's new events in batch order and keep those that fit.
    refused: dict[str, DomainError] = {}
    moves: dict[int, int] = {}
    for event in chunk:
        if event.event_id not in inserted:
            continue
        before = stock[event.sku]
        after = before + event.delta
        if after < 0:
            refused[event.event_id] = InsufficientStockError(event.sku, -event.delta, before)
        elif after > MAX_INT32:
            refused[event.event_id] = InvalidRequestError(
                f"event {event.event_id} would take the stock of {event.sku} past {MAX_INT32}"
            )
        else:
            stock[event.sku] = after
            pid = product_ids[event.sku]
            moves[pid] = moves.get(pid, 0) + event.delta
    # Our own uncommitted rows: the ledger never records a rejected event.
    uow.stock_events.forget(list(refused))
    uow.products.adjust_stock({pid: delta for pid, delta in moves.items() if delta})
    uow.commit()

    result = IngestResult()
    for event in chunk:
        if event.event_id in refused:
            result.rejected.append(RejectedEvent(event.event_id, refused[event.event_id]))
        elif event.event_id in inserted:
            result.applied.append(event.event_id)
        elif event.event_id in in_ledger:
            result.duplicates.append(event.event_id)
        else:
            result.rejected.append(RejectedEvent(event.event_id, ProductNotFoundError(event.sku)))
    return result
