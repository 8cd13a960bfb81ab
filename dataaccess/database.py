"""The writer engine, the optional reader engine, and read-only routing between them."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .credentials import CredentialProvider
from .engine import create_engine
from .settings import Settings
from .uow import UnitOfWork


class Database:
    """Holds the engines for one process: build once, share, `dispose()` at shutdown."""

    def __init__(self, writer: Engine, reader: Engine | None = None) -> None:
        self.writer = writer
        self.reader = reader
        for engine in {writer, reader or writer}:
            sa.event.listen(engine, "checkin", _end_read_only)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        credentials: CredentialProvider | None = None,
        reader_credentials: CredentialProvider | None = None,
    ) -> Database:
        """Build the writer engine, and a reader engine when DB_READER_HOST is set."""
        writer = create_engine(settings, credentials=credentials)
        reader = None
        if settings.reader_host:
            reader = create_engine(
                settings, host=settings.reader_host, credentials=reader_credentials
            )
        return cls(writer, reader)

    def unit_of_work(self, *, read_only: bool = False) -> UnitOfWork:
        """A unit of work on the writer, or a READ ONLY one on the reader (writer if none)."""
        if read_only:
            return UnitOfWork(self.reader or self.writer, read_only=True)
        return UnitOfWork(self.writer)

    def ping(self, *, read_only: bool = False) -> None:
        """Raise unless the database answers a trivial query."""
        with self.unit_of_work(read_only=read_only) as uow:
            uow.connection.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        """Close every pooled connection (process shutdown, or after a fork)."""
        self.writer.dispose()
        if self.reader is not None:
            self.reader.dispose()


# UnitOfWork sets psycopg2's `readonly` flag on a read-only unit of work's
# connection (psycopg2 then sends BEGIN READ ONLY); this clears it when the
# connection goes back to the pool, so it never leaks into a writer's next
# transaction. (SQLAlchemy's `postgresql_readonly` execution option does the
# same through per-checkout connection characteristics, at about twice the cost.)


def _end_read_only(dbapi_connection: Any, record: Any) -> None:
    # None (the server's default), not False: psycopg2 then has nothing to SET
    # when a later pre-ping switches the connection to autocommit.
    if dbapi_connection is not None and dbapi_connection.readonly is not None:
        dbapi_connection.readonly = None
