"""Read-only reports over a unit of work: low-stock products and order totals for a window.

Plain functions, like the services; callers pass a read-only unit of work
(`db.unit_of_work(read_only=True)`), which goes to the reader endpoint when one is set.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import BigInteger, cast, func, select

from .errors import InvalidRequestError
from .tables import orders, products
from .uow import UnitOfWork

MAX_LOW_STOCK_LIMIT = 1000


@dataclass(frozen=True)
class LowStockItem:
    sku: str
    name: str
    stock: int


@dataclass(frozen=True)
class StatusTotals:
    count: int
    total_cents: int


@dataclass(frozen=True)
class OrderTotals:
    """Orders created in [since, until), by their current status."""

    since: dt.datetime
    until: dt.datetime
    placed: StatusTotals
    cancelled: StatusTotals


def low_stock(uow: UnitOfWork, *, threshold: int, limit: int = 100) -> list[LowStockItem]:
    """Products with stock below `threshold`, emptiest first (then by sku), at most `limit`.

    It reads every product: no index covers stock, so that stock updates stay HOT
    (migration 0009 has the trade-off: 11-18 ms per 100,000 products, on the reader).
    """
    if threshold < 0:
        raise InvalidRequestError(f"threshold must not be negative; got {threshold}")
    if not 1 <= limit <= MAX_LOW_STOCK_LIMIT:
        raise InvalidRequestError(f"limit must be between 1 and {MAX_LOW_STOCK_LIMIT}; got {limit}")
    rows = uow.execute(
        select(products.c.sku, products.c.name, products.c.stock)
        .where(products.c.stock < threshold)
        .order_by(products.c.stock, products.c.sku)
        .limit(limit)
    )
    return [LowStockItem(row.sku, row.name, row.stock) for row in rows]


def order_totals(uow: UnitOfWork, *, since: dt.datetime, until: dt.datetime) -> OrderTotals:
    """Count and sum of orders created in [since, until): placed and cancelled separately."""
    if since.tzinfo is None or until.tzinfo is None:
        raise InvalidRequestError("since and until must carry a timezone")
    if since >= until:
        raise InvalidRequestError("since must be before until")
    rows = uow.execute(
        select(
            orders.c.status,
            func.count().label("order_count"),
            # sum(bigint) is numeric in PostgreSQL; the totals fit a bigint.
            cast(func.coalesce(func.sum(orders.c.total_cents), 0), BigInteger).label("total"),
        )
        .where(orders.c.created_at >= since, orders.c.created_at < until)
        .group_by(orders.c.status)
    )
    by_status = {row.status: StatusTotals(row.order_count, row.total) for row in rows}
    empty = StatusTotals(0, 0)
    return OrderTotals(
        since=since,
        until=until,
        placed=by_status.get("placed", empty),
        cancelled=by_status.get("cancelled", empty),
    )
