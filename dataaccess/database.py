"""The writer engine, the optional reader engine, and read-only routing between them."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .credentials import CredentialProvider, provider_for
from .engine import create_engine
from .settings import Settings
from .uow import UnitOfWork

log = logging.getLogger(__name__)

# After the reader endpoint fails to connect, read-only work goes to the writer
# for this long before the reader is tried again: one failed connect per period,
# not one per request. Long enough to ride out a replica's replacement (Aurora
# repoints the reader endpoint within seconds), short enough to spread reads
# back soon after.
READER_COOLDOWN_SECONDS = 10.0


class Database:
    """Holds the engines for one process: build once, share, `dispose()` at shutdown."""

    def __init__(
        self,
        writer: Engine,
        reader: Engine | None = None,
        *,
        credentials: Iterable[CredentialProvider] = (),
    ) -> None:
        self.writer = writer
        self.reader = reader
        # The engines' credential providers, for `reset`.
        self._credentials = tuple(credentials)
        self._reader_down_until = 0.0  # one float, set whole: threads need no lock for it
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
        if credentials is None:
            credentials = provider_for(settings, settings.host)
        writer = create_engine(settings, credentials=credentials)
        if not settings.reader_host:
            return cls(writer, credentials=[credentials])
        if reader_credentials is None:
            reader_credentials = provider_for(settings, settings.reader_host)
        reader = create_engine(settings, host=settings.reader_host, credentials=reader_credentials)
        return cls(writer, reader, credentials=[credentials, reader_credentials])

    def unit_of_work(self, *, read_only: bool = False, autocommit: bool = False) -> UnitOfWork:
        """A unit of work on the writer, or a READ ONLY one on the reader (writer if none).

        `autocommit=True` (read-only only) runs each SELECT without a transaction: one
        round trip instead of three, for work of a single statement (UnitOfWork).

        A reader that cannot be reached sends read-only work to the writer (still
        READ ONLY) for READER_COOLDOWN_SECONDS: reads keep working through a
        replica's replacement, and the writer can serve them. Writes never go to
        the reader.
        """
        if not read_only:
            return UnitOfWork(self.writer, autocommit=autocommit)
        if self.reader is None or time.monotonic() < self._reader_down_until:
            return UnitOfWork(self.writer, read_only=True, autocommit=autocommit)
        return UnitOfWork(
            self.reader,
            read_only=True,
            autocommit=autocommit,
            fallback=self.writer,
            on_fallback=self._reader_failed,
        )

    def _reader_failed(self, exc: BaseException) -> None:
        self._reader_down_until = time.monotonic() + READER_COOLDOWN_SECONDS
        log.warning(
            "reader unreachable (%s); reading from the writer for %.0f s",
            type(exc).__name__,
            READER_COOLDOWN_SECONDS,
        )

    def ping(self, *, read_only: bool = False) -> None:
        """Raise unless the database answers a trivial query (the reader itself when asked)."""
        engine = (self.reader or self.writer) if read_only else self.writer
        with UnitOfWork(engine, read_only=read_only) as uow:
            uow.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        """Close every pooled connection (process shutdown, or after a fork)."""
        self.writer.dispose()
        if self.reader is not None:
            self.reader.dispose()

    def reset(self) -> None:
        """Close every pooled connection and forget every cached credential, with the AWS
        session that fetched it: for an environment restored from a snapshot (Lambda
        SnapStart), which must log in afresh, with its own credentials."""
        self.dispose()
        self._reader_down_until = 0.0  # what the snapshot's environment knew of the reader
        for provider in self._credentials:
            provider.reset()


def _end_read_only(dbapi_connection: Any, record: Any) -> None:
    """At checkin, clear the psycopg2 flags `UnitOfWork.connection` set, so neither
    leaks into a writer's next transaction. (SQLAlchemy's `postgresql_readonly`
    execution option would do the same through its per-checkout connection
    characteristics, at about twice the cost.)"""
    if dbapi_connection is None or dbapi_connection.closed:
        return
    if dbapi_connection.autocommit:
        dbapi_connection.autocommit = False
    # None (the server's default), not False: with False, psycopg2 sends `SET
    # default_transaction_read_only TO DEFAULT` when a later pre-ping switches the
    # connection out of autocommit, a round trip and, behind RDS Proxy, a SET that
    # pins the session (tests/integration/test_proxy_mode.py records every statement).
    if dbapi_connection.readonly is not None:
        dbapi_connection.readonly = None
