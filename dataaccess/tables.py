"""The schema: SQLAlchemy Core tables of the inventory-and-orders domain.

Alembic's autogenerate compares the migrations with this metadata, and the
repositories build their statements from these tables; the ORM classes of
`models.py` are mapped onto them.
The naming convention gives every constraint a stable name, so Alembic's
autogenerate and hand-written migrations agree and downgrades can drop by name.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)

# The range of the INTEGER columns (prices, stock, quantities, deltas).
MAX_INT32 = 2**31 - 1

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _id() -> Column[int]:
    return Column("id", BigInteger, primary_key=True, autoincrement=True)


def _now(name: str) -> Column[dt.datetime]:
    return Column(name, DateTime(timezone=True), nullable=False, server_default=func.now())


customers = Table(
    "customers",
    metadata,
    _id(),
    Column("email", String(254), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    _now("created_at"),
    CheckConstraint("email = lower(email)", name="email_lowercase"),
)

products = Table(
    "products",
    metadata,
    _id(),
    Column("sku", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("price_cents", Integer, nullable=False),
    Column("stock", Integer, nullable=False, server_default="0"),
    _now("created_at"),
    Column(
        "updated_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
        onupdate=func.now(),
    ),
    CheckConstraint("price_cents >= 0", name="price_not_negative"),
    CheckConstraint("stock >= 0", name="stock_not_negative"),
    # No index on stock or updated_at, which every stock write changes: the updates
    # stay HOT, in their own page, which fillfactor keeps room in (migration 0009).
    postgresql_with={"fillfactor": 90},
)

orders = Table(
    "orders",
    metadata,
    _id(),
    Column("customer_id", ForeignKey("customers.id"), nullable=False, index=True),
    Column("status", String(16), nullable=False, server_default="placed"),
    Column("total_cents", BigInteger, nullable=False),
    # A client-chosen key, unique per customer: the same customer's same key
    # returns the same order. The fingerprint of the request it came with tells
    # a retry from a different order.
    Column("idempotency_key", String(200)),
    Column("request_fingerprint", String(64)),
    _now("created_at"),
    Column("cancelled_at", DateTime(timezone=True)),
    CheckConstraint("status IN ('placed', 'cancelled')", name="status_known"),
    Index("ix_orders_created_at", "created_at"),
    # Keys belong to a customer: another customer's key is neither taken nor visible.
    UniqueConstraint(
        "customer_id", "idempotency_key", name="uq_orders_customer_id_idempotency_key"
    ),
)

order_lines = Table(
    "order_lines",
    metadata,
    _id(),
    Column("order_id", ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("product_id", ForeignKey("products.id"), nullable=False, index=True),
    Column("sku", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price_cents", Integer, nullable=False),
    CheckConstraint("quantity > 0", name="quantity_positive"),
    UniqueConstraint("order_id", "product_id", name="uq_order_lines_order_id_product_id"),
)

# The idempotency ledger: one row per processed stock event id.
stock_events = Table(
    "stock_events",
    metadata,
    Column("event_id", String(200), primary_key=True),
    Column("product_id", ForeignKey("products.id"), nullable=False, index=True),
    Column("delta", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    _now("applied_at"),
)
