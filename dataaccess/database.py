"""The writer engine, the optional reader engine, and read-only routing between them."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from .credentials import CredentialProvider
from .engine import create_engine
from .settings import Settings
from .uow import UnitOfWork


class Database:
    """Holds the engines for one process: build once, share, `dispose()` at shutdown."""

    def __init__(self, writer: Engine, reader: Engine | None = None) -> None:
        self.writer = writer
        self.reader = reader
        self._write_sessions = sessionmaker(writer, expire_on_commit=False)
        # psycopg2 then opens read-only transactions with "BEGIN READ ONLY":
        # no extra round trip, and a stray write fails on any endpoint.
        read_engine = (reader or writer).execution_options(postgresql_readonly=True)
        self._read_sessions = sessionmaker(read_engine, expire_on_commit=False)

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
        factory = self._read_sessions if read_only else self._write_sessions
        return UnitOfWork(factory, read_only=read_only)

    def ping(self, *, read_only: bool = False) -> None:
        """Raise unless the database answers a trivial query."""
        factory: sessionmaker[Session] = self._read_sessions if read_only else self._write_sessions
        with factory() as session:
            session.execute(text("SELECT 1"))

    def dispose(self) -> None:
        """Close every pooled connection (process shutdown, or after a fork)."""
        self.writer.dispose()
        if self.reader is not None:
            self.reader.dispose()
