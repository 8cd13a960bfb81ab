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

Per chunk, in the common case, one statement and a commit: it locks the
chunk's products FOR NO KEY UPDATE in sku order (the order `place_order` locks
in, so orders and ingests queue instead of deadlocking), replays each
product's events in batch order on the locked stock, and, when every event fits
(a known SKU, a stock within range at every step), inserts the ledger rows and
moves the stock. When some event does not fit, the locked stock comes back, the
events are replayed in Python (those that would take the stock below zero or
past the column's range are rejected) and the rest recorded by a second
statement. When an insert finds an id the ledger already holds (a
redelivery), the stock is left alone, the chunk is rolled back, and it is
decided again with the ledger read after the locks: that read sees any ledger
row of a transaction it waited for, since another delivery of the same event
locks the same product. Nothing is ever deleted: the ledger is append-only,
and the application role has no DELETE on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .errors import DomainError, InsufficientStockError, InvalidRequestError, ProductNotFoundError
from .models import MAX_INT32
from .records import StockEventIn as StockEventIn
from .repositories import NewStockEvent, StockLevel
from .uow import UnitOfWork

DEFAULT_CHUNK_SIZE = 1000


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


class LedgerRaceError(RuntimeError):
    """Another transaction recorded one of a chunk's event ids after the chunk read the ledger.

    Only an id that arrived with a different SKU can get there (the same SKU
    waits on the chunk's product lock). Nothing of the chunk is committed; a
    retry reads the other transaction's ledger row and treats the id as a duplicate.
    """


def _ingest_chunk(uow: UnitOfWork, chunk: Sequence[StockEventIn]) -> IngestResult:
    """One transaction: lock the products, decide, record and apply what fits.

    The common case is one statement: every event fits and none is in the
    ledger yet. When some event does not fit, the locked stock comes back and
    the events are replayed here, then the ones that fit are recorded. When the
    insert finds ids already in the ledger (redeliveries), their deltas must
    not have counted in the replay: the chunk is undone and decided again with
    the ledger read after the locks.
    """
    levels, inserted = uow.stock_events.apply_if_all_fit(chunk)
    refused: dict[str, DomainError] = {}
    expected = len(chunk)
    if not inserted:  # some event did not fit (or every one was in the ledger)
        accepted, refused = _decide(chunk, levels, in_ledger=set())
        inserted = uow.stock_events.record_and_apply(accepted)
        expected = len(accepted)
    if len(inserted) != expected:
        uow.rollback()
        levels = uow.products.lock_stock(list({e.sku for e in chunk}))
        in_ledger = uow.stock_events.recorded([e.event_id for e in chunk])
        accepted, refused = _decide(chunk, levels, in_ledger)
        inserted = uow.stock_events.record_and_apply(accepted)
        if len(inserted) != len(accepted):
            uow.rollback()
            raise LedgerRaceError(
                f"{len(accepted) - len(inserted)} event id(s) were recorded by another "
                "transaction while this chunk was applied; nothing of the chunk was committed"
            )
    uow.commit()

    result = IngestResult()
    for event in chunk:
        if event.event_id in refused:
            result.rejected.append(RejectedEvent(event.event_id, refused[event.event_id]))
        elif event.event_id in inserted:
            result.applied.append(event.event_id)
        else:
            result.duplicates.append(event.event_id)
    return result


def _decide(
    chunk: Sequence[StockEventIn], levels: Mapping[str, StockLevel], in_ledger: set[str]
) -> tuple[list[NewStockEvent], dict[str, DomainError]]:
    """Replay each product's new events in batch order on its locked stock.

    The rows are locked, so this stock is the truth until the commit. Returns
    the events that fit, and the reason each refused one does not.
    """
    stock = {sku: level.stock for sku, level in levels.items()}
    accepted: list[NewStockEvent] = []
    refused: dict[str, DomainError] = {}
    for event in chunk:
        if event.event_id in in_ledger:
            continue
        level = levels.get(event.sku)
        if level is None:
            refused[event.event_id] = ProductNotFoundError(event.sku)
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
            accepted.append(
                NewStockEvent(
                    event.event_id, level.id, event.delta, event.reason, event.occurred_at
                )
            )
    return accepted, refused
