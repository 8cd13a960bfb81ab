"""The engine factory: the one place credentials enter a connection.

Credentials are looked up per new physical connection in SQLAlchemy's
`do_connect` event, so they are never part of the URL, never in the pool's
repr and never logged. A login refused with a cached credential invalidates
it and retries exactly once, which covers an expired IAM token and a rotated
secret without a failed request.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg2
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import ConnectionPoolEntry

from .credentials import CredentialProvider, provider_for
from .settings import Settings

log = logging.getLogger(__name__)

# libpq reports a refused login as a message only (no SQLSTATE reaches the
# client before the session exists), so these fragments are all there is.
# "PAM authentication failed" is what RDS says to a stale IAM token.
_AUTH_FAILURES = ("password authentication failed", "PAM authentication failed")


def is_auth_failure(exc: BaseException) -> bool:
    """True when the server refused the credential, as opposed to any other connect error."""
    return isinstance(exc, psycopg2.OperationalError) and any(
        fragment in str(exc) for fragment in _AUTH_FAILURES
    )


def create_engine(
    settings: Settings,
    *,
    host: str | None = None,
    credentials: CredentialProvider | None = None,
    **engine_kwargs: Any,
) -> Engine:
    """Build an engine for `host` (default: the writer) that logs in through `credentials`.

    Without `credentials`, the provider is chosen by `settings.auth`; pass one to
    share a cache between engines or to inject a test double.
    """
    host = host or settings.host
    if credentials is None:
        credentials = provider_for(settings, host)
    url = URL.create("postgresql+psycopg2", host=host, port=settings.port, database=settings.name)
    connect_args: dict[str, Any] = {
        "sslmode": settings.sslmode,
        "connect_timeout": settings.connect_timeout,
        "application_name": settings.application_name,
        # Set at login, so every connection has it before its first statement
        # and it costs no extra round trip.
        "options": f"-c statement_timeout={settings.statement_timeout_ms}",
    }
    if settings.sslrootcert:
        connect_args["sslrootcert"] = settings.sslrootcert
    kwargs: dict[str, Any] = {
        "connect_args": connect_args,
        # 0 means SQLAlchemy's own ping on every checkout; otherwise ours, below.
        "pool_pre_ping": settings.pool_pre_ping_idle == 0,
        "pool_recycle": settings.pool_recycle,
        # Error messages carry the statement but never its parameters: those
        # hold emails and event bodies, and errors end up in logs.
        "hide_parameters": True,
        # A caller choosing its own pool class (e.g. NullPool for one-off
        # migrations) also chooses its sizing.
        **({} if "poolclass" in engine_kwargs else _pool_policy(settings)),
        **engine_kwargs,
    }
    engine = sa.create_engine(url, **kwargs)
    sa.event.listen(engine, "do_connect", _connect_hook(credentials))
    if not kwargs["pool_pre_ping"]:
        _ping_when_idle(engine, settings.pool_pre_ping_idle)
    return engine


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Pre-ping on checkout only connections that sat in the pool `idle_seconds` or more.

    A ping is a round trip, on top of the three of a point read. A connection
    that went back to the pool moments ago has just worked; one that sat idle
    (a frozen Lambda, a quiet night, a failover) is the one worth checking. When a statement on an
    unpinged connection does hit a dead server, SQLAlchemy invalidates the
    whole pool, so the next checkout reconnects. This is SQLAlchemy's
    "custom pessimistic ping" recipe: a failed ping raises DisconnectionError,
    and the pool replaces the connection and tries again.
    """

    def stamp(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    def ping(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except psycopg2.Error as exc:
            raise sa.exc.DisconnectionError("connection failed its pre-ping") from exc

    sa.event.listen(engine, "connect", stamp)
    sa.event.listen(engine, "checkin", stamp)
    sa.event.listen(engine, "checkout", ping)


def _pool_policy(settings: Settings) -> dict[str, Any]:
    if settings.in_lambda:
        # One invocation at a time per execution environment: one connection,
        # kept across warm invocations and pinged before reuse, since the
        # environment may have been frozen for minutes.
        return {"pool_size": 1, "max_overflow": 0}
    # LIFO keeps the hot connections hot and lets the extras idle out.
    return {
        "pool_size": settings.pool_size,
        "max_overflow": settings.max_overflow,
        "pool_use_lifo": True,
    }


def _connect_hook(credentials: CredentialProvider) -> Any:
    def do_connect(
        dialect: sa.Dialect, conn_rec: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]
    ) -> Any:
        credential = credentials.get()
        cparams.update(user=credential.user, password=credential.password)
        try:
            return dialect.connect(*cargs, **cparams)
        except psycopg2.OperationalError as exc:
            if not (credential.cached and is_auth_failure(exc)):
                raise
            log.info("login refused with a cached credential; fetching a fresh one and retrying")
            credentials.invalidate()
            credential = credentials.get()
            cparams.update(user=credential.user, password=credential.password)
            return dialect.connect(*cargs, **cparams)

    return do_connect
