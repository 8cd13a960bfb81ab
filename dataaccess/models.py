"""ORM classes mapped onto the Core tables of `tables.py`, for ad-hoc ORM work.

The repositories use Core statements and never import this module: nothing on
their path imports `sqlalchemy.orm`, about 50 ms of a Lambda cold start
(docs/lambda.md, "Cold start and SnapStart"). `UnitOfWork.session` is there for
work that wants the ORM, `uow.session.get(Product, 1)`, and imports it on first use. The columns
and their types are the tables'; the annotations only tell type checkers.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import DeclarativeBase, Mapped, relationship

from . import tables


class Base(DeclarativeBase):
    metadata = tables.metadata
    # Fetch server-side defaults (ids, timestamps) with RETURNING at flush, so
    # objects stay readable after their unit of work has closed.
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 (SQLAlchemy reads it per class)


class Customer(Base):
    __table__ = tables.customers

    id: Mapped[int]
    email: Mapped[str]
    name: Mapped[str]
    created_at: Mapped[dt.datetime]


class Product(Base):
    __table__ = tables.products

    id: Mapped[int]
    sku: Mapped[str]
    name: Mapped[str]
    price_cents: Mapped[int]
    stock: Mapped[int]
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class Order(Base):
    __table__ = tables.orders

    id: Mapped[int]
    customer_id: Mapped[int]
    status: Mapped[str]
    total_cents: Mapped[int]
    idempotency_key: Mapped[str | None]
    request_fingerprint: Mapped[str | None]
    created_at: Mapped[dt.datetime]
    cancelled_at: Mapped[dt.datetime | None]

    # "raise" turns an accidental lazy load into an error, not a hidden query.
    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order", lazy="raise", order_by="OrderLine.id"
    )


class OrderLine(Base):
    __table__ = tables.order_lines

    id: Mapped[int]
    order_id: Mapped[int]
    product_id: Mapped[int]
    sku: Mapped[str]
    quantity: Mapped[int]
    unit_price_cents: Mapped[int]

    order: Mapped[Order] = relationship(back_populates="lines")


class StockEvent(Base):
    """`tables.stock_events`, the ledger."""

    __table__ = tables.stock_events

    event_id: Mapped[str]
    product_id: Mapped[int]
    delta: Mapped[int]
    reason: Mapped[str]
    occurred_at: Mapped[dt.datetime]
    applied_at: Mapped[dt.datetime]
