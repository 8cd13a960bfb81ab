"""The unit of work: the only place a transaction begins, commits or rolls back."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy.orm import Session, sessionmaker

from .repositories import (
    CustomerRepository,
    OrderRepository,
    ProductRepository,
    StockEventRepository,
)


class UnitOfWork:
    """One session, one transaction; anything not committed is rolled back on exit.

    Use as a context manager, once: ``with db.unit_of_work() as uow: ...; uow.commit()``.
    """

    session: Session
    customers: CustomerRepository
    products: ProductRepository
    orders: OrderRepository
    stock_events: StockEventRepository

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def __enter__(self) -> Self:
        self.session = self._session_factory()
        self.customers = CustomerRepository(self.session)
        self.products = ProductRepository(self.session)
        self.orders = OrderRepository(self.session)
        self.stock_events = StockEventRepository(self.session)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # close() rolls back whatever was not committed and returns the connection.
        self.session.close()

    def commit(self) -> None:
        self.session.commit()

    def rollback(self) -> None:
        self.session.rollback()
