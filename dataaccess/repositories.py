"""Repositories: queries over one session. They never begin, commit or close it."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Customer, Order, Product, StockEvent


class CustomerRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, customer: Customer) -> None:
        self.session.add(customer)

    def get(self, customer_id: int) -> Customer | None:
        return self.session.get(Customer, customer_id)


class ProductRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, product: Product) -> None:
        self.session.add(product)

    def get_by_sku(self, sku: str) -> Product | None:
        return self.session.scalars(select(Product).where(Product.sku == sku)).one_or_none()

    def lock_by_skus(self, skus: Sequence[str]) -> dict[str, Product]:
        """Lock the rows FOR UPDATE in sku order, so concurrent orders never deadlock."""
        rows = self.session.scalars(
            select(Product).where(Product.sku.in_(skus)).order_by(Product.sku).with_for_update()
        )
        return {p.sku: p for p in rows}

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
        return self.session.scalars(select(Order).where(Order.idempotency_key == key)).one_or_none()


class StockEventRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, event_id: str) -> StockEvent | None:
        return self.session.get(StockEvent, event_id)
