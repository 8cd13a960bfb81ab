"""The unit of work: the only place a transaction begins, commits or rolls back."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from .repositories import (
    CustomerRepository,
    OrderRepository,
    ProductRepository,
    StockEventRepository,
)


class UnitOfWork:
    """One connection, one transaction; anything not committed is rolled back on exit.

    Use as a context manager, once: ``with db.unit_of_work() as uow: ...; uow.commit()``.

    The repositories run SQLAlchemy Core statements on `connection`. An ORM
    `session` is there for ad-hoc work; it is created on first use and joins the
    same transaction, so Core and ORM statements commit or roll back together.
    Both are created lazily: a unit of work that runs no statement never checks
    out a connection, and one that only runs Core statements never pays for a session.
    """

    customers: CustomerRepository
    products: ProductRepository
    orders: OrderRepository
    stock_events: StockEventRepository

    def __init__(self, engine: Engine, *, read_only: bool = False) -> None:
        self._engine = engine
        self.read_only = read_only
        self._connection: Connection | None = None
        self._session: Session | None = None

    def __enter__(self) -> Self:
        self.customers = CustomerRepository(self)
        self.products = ProductRepository(self)
        self.orders = OrderRepository(self)
        self.stock_events = StockEventRepository(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._session is not None:
                self._session.close()
        finally:
            self._session = None
            if self._connection is not None:
                # Rolls back whatever was not committed and returns the connection.
                self._connection.close()
                self._connection = None

    @property
    def connection(self) -> Connection:
        """This unit of work's connection; checked out of the pool on first use."""
        if self._connection is None:
            connection = self._engine.connect()
            if self.read_only:
                # psycopg2 opens its transaction lazily, at the first statement;
                # with this flag it sends BEGIN READ ONLY then: no extra round trip,
                # and a stray write fails on any endpoint. Database resets the flag
                # when the connection goes back to the pool.
                connection.connection.dbapi_connection.readonly = True  # type: ignore[union-attr]
            self._connection = connection
        return self._connection

    @property
    def session(self) -> Session:
        """An ORM session in this unit of work's transaction; created on first use."""
        if self._session is None:
            connection = self.connection
            if not connection.in_transaction():
                connection.begin()
            # rollback_only: the session's commit flushes but leaves the
            # transaction to commit(); its rollback rolls the transaction back.
            self._session = Session(
                bind=connection, expire_on_commit=False, join_transaction_mode="rollback_only"
            )
        return self._session

    def commit(self) -> None:
        """Flush the session, if any, and commit the transaction."""
        if self._session is not None:
            self._session.commit()
        if self._connection is not None:
            self._connection.commit()

    def rollback(self) -> None:
        if self._session is not None:
            self._session.rollback()
        if self._connection is not None:
            self._connection.rollback()
