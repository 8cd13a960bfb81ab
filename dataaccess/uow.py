"""The unit of work: the only place a transaction begins, commits or rolls back."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVarTuple, overload

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, CursorResult, Engine
from sqlalchemy.sql import Executable

from .repositories import (
    CustomerRepository,
    OrderRepository,
    ProductRepository,
    StockEventRepository,
)
from .resilience import is_unavailable

if TYPE_CHECKING:
    from sqlalchemy.orm import Session
    from sqlalchemy.sql.selectable import TypedReturnsRows
    from sqlalchemy.util.typing import TupleAny

_Ts = TypeVarTuple("_Ts")

log = logging.getLogger(__name__)


class UnitOfWork:
    """One connection, one transaction; anything not committed is rolled back on exit.

    Use as a context manager, once: ``with db.unit_of_work() as uow: ...; uow.commit()``.

    The repositories run SQLAlchemy Core statements on `connection`. An ORM
    `session` is there for ad-hoc work; it is created on first use and joins the
    same transaction, so Core and ORM statements commit or roll back together.
    Both are created lazily: a unit of work that runs no statement never checks
    out a connection, and one that only runs Core statements never pays for a session.

    A read-only unit of work with `autocommit=True` opens no transaction: each
    statement is one round trip, where a transaction adds a BEGIN READ ONLY and a
    ROLLBACK. Reads lose nothing by it at the package's isolation level, READ
    COMMITTED, where every statement takes its own snapshot even inside a
    transaction; what goes is the server's READ ONLY check, and a client-side one
    stands in: anything but a SELECT raises before it is sent. (A SELECT calling
    a function that writes would still run: hence opt-in, for reviewed reads
    such as the API's GET views.)

    Read-only work survives one dead connection: when the first statement of a
    read-only unit of work finds its pooled connection dead (nothing has been
    read yet, so nothing can be inconsistent), it runs again on a fresh one.
    A read-only unit of work given a `fallback` engine (the writer, behind a
    reader) uses it when its own engine cannot connect. Writes are never
    retried here: their clients retry with an idempotency key.
    """

    customers: CustomerRepository
    products: ProductRepository
    orders: OrderRepository
    stock_events: StockEventRepository

    def __init__(
        self,
        engine: Engine,
        *,
        read_only: bool = False,
        autocommit: bool = False,
        fallback: Engine | None = None,
        on_fallback: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._engine = engine
        if autocommit and not read_only:
            raise ValueError("autocommit is for read-only work: a write needs its transaction")
        self.read_only = read_only
        self.autocommit = autocommit
        self._fallback = fallback if read_only else None
        self._on_fallback = on_fallback
        self._may_retry = read_only
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
                connection, self._connection = self._connection, None
                # Rolls back whatever was not committed and returns the connection.
                try:
                    connection.close()
                except sa_exc.DBAPIError as error:
                    # The server went away after the work was done (a restart, a
                    # failover): the rollback has nothing to undo, the pool has
                    # invalidated the connection, and what was read or committed stands.
                    if not error.connection_invalidated:
                        raise
                    log.info("connection lost before its rollback; it was discarded")

    @overload
    def execute(
        self,
        statement: TypedReturnsRows[*_Ts],
        parameters: Mapping[str, Any] | None = None,
    ) -> CursorResult[*_Ts]: ...

    @overload
    def execute(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> CursorResult[*TupleAny]: ...

    def execute(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> CursorResult[*TupleAny]:
        """Run a statement on this unit of work's connection (the repositories' one way in)."""
        if self.autocommit and not statement.is_select:
            raise ValueError(
                f"an autocommit unit of work runs SELECTs only, not {type(statement).__name__}"
            )
        if not self._may_retry:
            return self.connection.execute(statement, parameters)
        self._may_retry = False
        try:
            return self.connection.execute(statement, parameters)
        except sa_exc.DBAPIError as exc:
            if not exc.connection_invalidated or self._session is not None:
                raise
            log.info("read-only connection was dead before any row; retrying on a fresh one")
            self._connection = None  # invalidated already; nothing to return to the pool
        return self.connection.execute(statement, parameters)

    @property
    def connection(self) -> Connection:
        """This unit of work's connection; checked out of the pool on first use."""
        if self._connection is None:
            connection = self._connect()
            dbapi_connection: Any = connection.connection.dbapi_connection
            # Flags of psycopg2's, which send nothing until the first statement
            # (no SET, which would pin an RDS Proxy session); Database resets them
            # when the connection goes back to the pool.
            if self.autocommit:
                # No BEGIN, no ROLLBACK: SQLAlchemy's begin is a no-op for psycopg2,
                # whose commit and rollback send nothing in autocommit.
                dbapi_connection.autocommit = True
            elif self.read_only:
                # psycopg2 opens its transaction lazily, at the first statement; with
                # this flag as BEGIN READ ONLY: a stray write fails on any endpoint.
                dbapi_connection.readonly = True
            self._connection = connection
        return self._connection

    def _connect(self) -> Connection:
        try:
            return self._engine.connect()
        except sa_exc.SQLAlchemyError as exc:
            if self._fallback is None or not is_unavailable(exc):
                raise
            if self._on_fallback is not None:
                self._on_fallback(exc)
            self._engine, self._fallback = self._fallback, None
            return self._engine.connect()

    @property
    def session(self) -> Session:
        """An ORM session in this unit of work's transaction; created on first use."""
        if self._session is None:
            connection = self.connection
            if not connection.in_transaction():
                connection.begin()
            from sqlalchemy.orm import Session  # here: the Lambda path never imports the ORM

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
