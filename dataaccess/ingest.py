"""Stock events, applied exactly once: the one place an event is decided.

The rules, the same for a batch from SQS and for a single event
(`apply_stock_event` is a batch of one):

- an event's ledger row and its stock change commit in the same transaction;
- an event id already in the ledger, or repeated within the batch (the first
  occurrence wins), is a duplicate and has no effect;
- an event is *rejected* (not applied, not recorded in the ledger, so a later
  retry may still apply it) when it is invalid, names an unknown SKU, or would
  take its product's stock below zero or past the column's range. Events of one
  product apply in batch order; a rejection never fails the rest of the batch,
  so an SQS consumer can report just the rejected ids as partial batch failures.

Each chunk of events is one transaction of two statements and a commit:

1. lock the chunk's products and read their stock (`ProductRepository.lock_stock`,
   in the order every writer of stock locks in);
2. `decide` replays the events in batch order on the locked stock, and one
   statement records the accepted ones in the ledger and moves the stock
   (`StockEventRepository.record_and_apply`).

Step 2 assumes that none of the chunk's ids is in the ledger yet, which is true
unless SQS redelivers an event that was applied. When one is, the ledger's
primary key refuses the insert, nothing of the chunk is kept, and the chunk
runs again, this time reading which of its ids the ledger holds right after
the locks: that read sees the ledger row of any transaction the locks waited
for, since another delivery of the same event names the same product. The one
race the locks cannot order, the same id arriving with another SKU after that
read, fails the chunk (`LedgerRaceError`). Nothing is ever deleted: the ledger
is append-only, and the application role has no DELETE on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError

from .errors import DomainError, InsufficientStockError, InvalidRequestError, ProductNotFoundError
from .records import StockEventIn
from .repositories import LEDGER_KEY, NewStockEvent, StockLevel, violated_constraint
from .tables import MAX_INT32
from .uow import UnitOfWork

DEFAULT_CHUNK_SIZE = 1000


@dataclass(frozen=True)
class RejectedEvent:
    event_id: str
    error: DomainError  # ProductNotFoundError, InsufficientStockError or InvalidRequestError


@dataclass
class IngestResult:
    """Which event ids a batch applied (in batch order), found already applied, or rejected."""

    applied: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[RejectedEvent] = field(default_factory=list)

    def extend(self, other: IngestResult) -> None:
        self.applied.extend(other.applied)
        self.duplicates.extend(other.duplicates)
        self.rejected.extend(other.rejected)


class LedgerRaceError(RuntimeError):
    """One of a chunk's ids is in the ledger already; nothing of the chunk was committed.

    The chunk's first run raises it for a redelivery, and the chunk runs again; the
    caller sees it only for the race the module docstring names.
    """


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

    An unknown SKU or a stock that would go below zero raises instead of being recorded.
    """
    result = ingest_stock_events(uow, [event])
    if result.rejected:
        raise result.rejected[0].error
    return bool(result.applied)


def decide(
    chunk: Sequence[StockEventIn], levels: Mapping[str, StockLevel], in_ledger: set[str]
) -> tuple[list[NewStockEvent], IngestResult]:
    """Replay the chunk's events in batch order on the locked stock of their products.

    `levels` is the stock by SKU, read under the products' row locks, so it is
    the truth until the commit; `in_ledger` the ids the ledger already holds.
    Returns the events to record and apply, and what becomes of each event once
    they are. Pure: no statement runs here.
    """
    stock = {sku: level.stock for sku, level in levels.items()}
    accepted: list[NewStockEvent] = []
    result = IngestResult()
    for event in chunk:
        if event.event_id in in_ledger:
            result.duplicates.append(event.event_id)
            continue
        level = levels.get(event.sku)
        if level is None:
            result.rejected.append(RejectedEvent(event.event_id, ProductNotFoundError(event.sku)))
            continue
        before = stock[event.sku]
        after = before + event.delta
        if after < 0:
            error: DomainError = InsufficientStockError(event.sku, -event.delta, before)
            result.rejected.append(RejectedEvent(event.event_id, error))
        elif after > MAX_INT32:
            error = InvalidRequestError(
                f"event {event.event_id} would take the stock of {event.sku} past {MAX_INT32}"
            )
            result.rejected.append(RejectedEvent(event.event_id, error))
        else:
            stock[event.sku] = after
            accepted.append(
                NewStockEvent(
                    event.event_id, level.id, event.delta, event.reason, event.occurred_at
                )
            )
            result.applied.append(event.event_id)
    return accepted, result


def _invalid(event: StockEventIn) -> DomainError | None:
    if not event.event_id:
        return InvalidRequestError("event_id must not be empty")
    if not -MAX_INT32 <= event.delta <= MAX_INT32:
        return InvalidRequestError(
            f"delta of event {event.event_id} must be between {-MAX_INT32} and {MAX_INT32}"
        )
    return None


def _ingest_chunk(uow: UnitOfWork, chunk: Sequence[StockEventIn]) -> IngestResult:
    try:
        return _apply_chunk(uow, chunk, read_ledger=False)
    except LedgerRaceError:  # rolled back: a redelivery, most likely; now read the ledger
        return _apply_chunk(uow, chunk, read_ledger=True)


def _apply_chunk(
    uow: UnitOfWork, chunk: Sequence[StockEventIn], *, read_ledger: bool
) -> IngestResult:
    """One transaction: the steps of the module's docstring, then the commit."""
    levels = uow.products.lock_stock(sorted({e.sku for e in chunk}))
    in_ledger = uow.stock_events.recorded([e.event_id for e in chunk]) if read_ledger else set()
    accepted, result = decide(chunk, levels, in_ledger)
    try:
        uow.stock_events.record_and_apply(accepted)
    except IntegrityError as exc:
        uow.rollback()
        if violated_constraint(exc) == LEDGER_KEY:
            raise LedgerRaceError(
                "another transaction recorded one of this chunk's event ids while the chunk "
                "was applied; nothing of the chunk was committed"
            ) from exc
        raise
    uow.commit()
    return result
