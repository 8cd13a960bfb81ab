"""Repositories: queries over one session. They never begin, commit or close it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from .models import Customer, Order, OrderLine, Product, StockEvent

# Hot-path statements, built once: building `Product.sku == sku` on every call
# costs more than SQLAlchemy's cached compile of the finished statement.
_PRODUCT_BY_SKU = select(Product).where(Product.sku == bindparam("sku"))
_products = Product.__table__.c
# Plain Core (table columns, not ORM attributes): these rows feed arithmetic,
# not objects, and skipping the ORM's result machinery is measurably cheaper.
_LOCK_STOCK = (
    select(_products.sku, _products.id, _products.price_cents, _products.stock)
    .where(_products.sku.in_(bindparam("skus", expanding=True)))
    .order_by(_products.sku)
    # NO KEY UPDATE: what an UPDATE of non-key columns needs, and it does not
    # block the foreign-key checks of inserts that reference these rows.
    .with_for_update(key_share=True)
)
# One statement for any number of products. Callers hold the row locks (taken
# in sku order), so the arithmetic cannot race; the CHECK keeps stock >= 0.
_ADJUST_STOCK = text(
    """
    UPDATE products AS p SET stock = p.stock + d.delta, updated_at = now()
    FROM unnest(CAST(:ids AS bigint[]), CAST(:deltas AS integer[])) AS d(id, delta)
    WHERE p.id = d.id
    """
)
_RECORDED = select(StockEvent.event_id).where(
    StockEvent.event_id.in_(bindparam("ids", expanding=True))
)
_FORGET = text("DELETE FROM stock_events WHERE event_id = ANY(CAST(:ids AS text[]))")
_WITH_LINES = selectinload(Order.lines)
_ORDER_BY_KEY = select(Order).where(Order.idempotency_key == bindparam("key")).options(_WITH_LINES)


class CustomerRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, customer: Customer) -> None:
        self.session.add(customer)

    def get(self, customer_id: int) -> Customer | None:
        return self.session.get(Customer, customer_id)


class StockLevel(NamedTuple):
    id: int
    price_cents: int
    stock: int


class ProductRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, product: Product) -> None:
        self.session.add(product)

    def get_by_sku(self, sku: str) -> Product | None:
        return self.session.scalars(_PRODUCT_BY_SKU, {"sku": sku}).one_or_none()

    def lock_stock(self, skus: Sequence[str]) -> dict[str, StockLevel]:
        """Lock the rows in sku order and read their stock.

        Every writer of stock locks products first, in this order (orders and
        cancellations here; event ingest in its ledger statement), so they
        queue instead of deadlocking.
        """
        rows = self.session.execute(_LOCK_STOCK, {"skus": list(skus)})
        return {sku: StockLevel(pid, price, stock) for sku, pid, price, stock in rows}

    def adjust_stock(self, deltas: Mapping[int, int]) -> None:
        """Add `delta` to each product id's stock, in one statement (rows locked by the caller)."""
        if deltas:
            self.session.execute(
                _ADJUST_STOCK, {"ids": list(deltas), "deltas": list(deltas.values())}
            )

    def page(self, *, after_sku: str | None, limit: int, stock_below: int | None) -> list[Product]:
        """Products in sku order, after `after_sku` (keyset pagination)."""
        query = select(Product).order_by(Product.sku).limit(limit)
        if after_sku is not None:
            query = query.where(Product.sku > after_sku)
        if stock_below is not None:
            query = query.where(Product.stock < stock_below)
        return list(self.session.scalars(query))


class OrderRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def insert(
        self, *, lines: Sequence[Mapping[str, Any]], status: str = "placed", **values: Any
    ) -> Order:
        """Insert an order and its lines now, two statements, and return the loaded order.

        ORM bulk INSERT ... RETURNING: the same rows as session.add + flush,
        without the unit-of-work bookkeeping that costs more than the inserts on
        a busy path.
        """
        order = self.session.scalars(
            insert(Order).returning(Order), [{"status": status, **values}]
        ).one()
        rows = self.session.scalars(
            insert(OrderLine).returning(OrderLine),
            [{"order_id": order.id, **line} for line in lines],
        )
        # Ids come from the sequence in row order; sorting by id keeps the lines
        # in request order without asking the server for an ordered RETURNING.
        set_committed_value(order, "lines", sorted(rows, key=lambda line: line.id))
        return order

    def get(self, order_id: int, *, for_update: bool = False) -> Order | None:
        return self.session.get(Order, order_id, with_for_update=for_update, options=[_WITH_LINES])

    def get_by_idempotency_key(self, key: str) -> Order | None:
        return self.session.scalars(_ORDER_BY_KEY, {"key": key}).one_or_none()


class StockEventRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def recorded(self, event_ids: Sequence[str]) -> set[str]:
        """Which of these event ids the ledger already holds."""
        if not event_ids:
            return set()
        return set(self.session.scalars(_RECORDED, {"ids": list(event_ids)}))

    def forget(self, event_ids: Sequence[str]) -> None:
        """Remove ledger rows this transaction wrote for events it then rejected."""
        if event_ids:
            self.session.execute(_FORGET, {"ids": list(event_ids)})
