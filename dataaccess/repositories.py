"""Repositories: queries over one session. They never begin, commit or close it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from .models import Customer, Order, Product, StockEvent

# Hot-path statements, built once: building `Product.sku == sku` on every call
# costs more than SQLAlchemy's cached compile of the finished statement.
_PRODUCT_BY_SKU = select(Product).where(Product.sku == bindparam("sku"))
_LOCK_STOCK = (
    select(Product.sku, Product.id, Product.price_cents, Product.stock)
    .where(Product.sku.in_(bindparam("skus", expanding=True)))
    .order_by(Product.sku)
    .with_for_update()
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
_ORDER_BY_KEY = select(Order).where(Order.idempotency_key == bindparam("key"))


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
        """Lock the rows FOR UPDATE in sku order, so concurrent orders never deadlock."""
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

    def add(self, order: Order) -> None:
        self.session.add(order)

    def get(self, order_id: int, *, for_update: bool = False) -> Order | None:
        return self.session.get(Order, order_id, with_for_update=for_update)

    def get_by_idempotency_key(self, key: str) -> Order | None:
        return self.session.scalars(_ORDER_BY_KEY, {"key": key}).one_or_none()


class StockEventRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, event_id: str) -> StockEvent | None:
        return self.session.get(StockEvent, event_id)
