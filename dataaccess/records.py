"""The values the repositories take and return: frozen, typed, detached from any connection.

The tables in `tables.py` define the schema; these are the values the
services hand to Flask views and Lambda handlers. A record is built straight
from a result row (no identity map, no change tracking), so it costs next to
nothing, can be read after its unit of work has closed, and can never issue a
query behind the caller's back.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    id: int
    email: str
    name: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ProductRecord:
    id: int
    sku: str
    name: str
    price_cents: int
    stock: int
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class OrderLineRecord:
    id: int
    product_id: int
    sku: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True, slots=True)
class OrderRecord:
    id: int
    customer_id: int
    status: str
    total_cents: int
    idempotency_key: str | None
    request_fingerprint: str | None
    created_at: dt.datetime
    cancelled_at: dt.datetime | None
    lines: tuple[OrderLineRecord, ...]  # in the order they were placed


@dataclass(frozen=True)
class StockEventIn:
    """A stock movement to apply once (an SQS record's body, once validated)."""

    event_id: str
    sku: str
    delta: int
    reason: str
    occurred_at: dt.datetime
