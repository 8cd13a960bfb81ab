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

Per chunk, the common case costs two statements: one
``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING RETURNING`` into the
ledger, then one ``UPDATE products ... FROM unnest(...)`` with the net delta per
product, guarded by the lowest stock the product may have for every event to
apply in order. Only a product whose guard fails (an event would go negative)
takes a slow path: lock it, replay its events in order, and drop the ledger rows
of the rejected ones before the commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import text

from .errors import DomainError, InsufficientStockError, InvalidRequestError, ProductNotFoundError
from .services import MAX_INT32, StockEventIn
from .uow import UnitOfWork

DEFAULT_CHUNK_SIZE = 1000

# Ledger rows go in sorted by event id, so two ingests of overlapping batches
# wait on each other's keys in the same order instead of deadlocking.
_INSERT_LEDGER = text(
    """
    INSERT INTO stock_events (event_id, product_id, delta, reason, occurred_at)
    SELECT e.event_id, p.id, e.delta, e.reason, e.occurred_at
    FROM unnest(
        CAST(:ids AS text[]), CAST(:skus AS text[]), CAST(:deltas AS integer[]),
        CAST(:reasons AS text[]), CAST(:occurred AS timestamptz[])
    ) AS e(event_id, sku, delta, reason, occurred_at)
    JOIN products AS p ON p.sku = e.sku
    ORDER BY e.event_id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING stock_events.event_id, stock_events.product_id
    """
)

# `need` is the stock a product must have for all its events to apply in batch
# order without going below zero. Rows come in sku order, the order in which
# place_order locks products, so the two never deadlock.
_APPLY_DELTAS = text(
    """
    UPDATE products AS p
    SET stock = p.stock + d.delta, updated_at = now()
    FROM unnest(
        CAST(:ids AS bigint[]), CAST(:deltas AS integer[]), CAST(:needs AS integer[])
    ) AS d(id, delta, need)
    WHERE p.id = d.id AND p.stock >= d.need
    RETURNING p.id
    """
)

_LOCK_PRODUCTS = text(
    "SELECT id, sku, stock FROM products WHERE id = ANY(CAST(:ids AS bigint[])) "
    "ORDER BY sku FOR UPDATE"
)

_FIND_IN_LEDGER = text(
    "SELECT event_id FROM stock_events WHERE event_id = ANY(CAST(:ids AS text[]))"
)

_FORGET = text("DELETE FROM stock_events WHERE event_id = ANY(CAST(:ids AS text[]))")


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


def _invalid(event: StockEventIn) -> DomainError | None:
    if not event.event_id:
        return InvalidRequestError("event_id must not be empty")
    if not -MAX_INT32 <= event.delta <= MAX_INT32:
        return InvalidRequestError(
            f"delta of event {event.event_id} must be between {-MAX_INT32} and {MAX_INT32}"
        )
    return None


def _ingest_chunk(uow: UnitOfWork, chunk: Sequence[StockEventIn]) -> IngestResult:
    """One transaction: ledger rows, then stock, for events with distinct ids."""
    session = uow.session
    rows = session.execute(
        _INSERT_LEDGER,
        {
            "ids": [e.event_id for e in chunk],
            "skus": [e.sku for e in chunk],
            "deltas": [e.delta for e in chunk],
            "reasons": [e.reason for e in chunk],
            "occurred": [e.occurred_at for e in chunk],
        },
    )
    inserted: dict[str, int] = {row[0]: row[1] for row in rows}
    missing = [e.event_id for e in chunk if e.event_id not in inserted]
    in_ledger = set(session.scalars(_FIND_IN_LEDGER, {"ids": missing})) if missing else set[str]()

    # Per product, in batch order: the net delta and the stock it needs up front.
    per_product: dict[int, list[StockEventIn]] = {}
    for event in chunk:
        product_id = inserted.get(event.event_id)
        if product_id is not None:
            per_product.setdefault(product_id, []).append(event)
    sku_of = {pid: events[0].sku for pid, events in per_product.items()}
    order = sorted(per_product, key=sku_of.__getitem__)
    nets, needs = [], []
    for pid in order:
        running, lowest = 0, 0
        for event in per_product[pid]:
            running += event.delta
            lowest = min(lowest, running)
        nets.append(running)
        needs.append(-lowest)
    moved = (
        set(session.scalars(_APPLY_DELTAS, {"ids": order, "deltas": nets, "needs": needs}))
        if order
        else set[int]()
    )
    short = [pid for pid in order if pid not in moved]
    refused = _replay_short(uow, {pid: per_product[pid] for pid in short}) if short else {}
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


def _replay_short(
    uow: UnitOfWork, per_product: dict[int, list[StockEventIn]]
) -> dict[str, DomainError]:
    """Apply, in order, the events of products that cannot take them all; reject the rest."""
    session = uow.session
    locked = session.execute(_LOCK_PRODUCTS, {"ids": list(per_product)}).all()
    refused: dict[str, DomainError] = {}
    moves: dict[int, int] = {}
    for pid, sku, stock in locked:
        start = running = stock
        for event in per_product[pid]:
            if running + event.delta < 0:
                refused[event.event_id] = InsufficientStockError(sku, -event.delta, running)
            else:
                running += event.delta
        if running != start:
            moves[pid] = running - start
    if refused:
        # Our own uncommitted rows: the ledger never records a rejected event.
        session.execute(_FORGET, {"ids": list(refused)})
    uow.products.adjust_stock(moves)
    return refused
