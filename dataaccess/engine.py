"""The engine factory: the one place credentials enter a connection, and where
each connection-level failure of the failure model is handled.

Credentials are looked up per new physical connection in SQLAlchemy's
`do_connect` event, so they are never part of the URL, never in the pool's
repr and never logged. That hook also owns connect retries: a login refused
with a cached credential invalidates it and retries at once; a refused fresh
secret (a rotation in progress) and a transient failure (restart, failover,
resume from 0 ACU) are retried with full-jitter backoff until the connect
budget runs out. The writer's connections insist on a read-write server
(`target_session_attrs`), and an error that says the writer is gone
invalidates the whole pool (`handle_error`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg2
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, ExceptionContext
from sqlalchemy.pool import ConnectionPoolEntry

from . import metrics, timeouts
from .credentials import CredentialProvider, provider_for
from .resilience import (
    backoff_delays,
    deadline_after,
    is_auth_failure,
    is_transient_connect_error,
    writer_gone,
)
from .settings import Settings

log = logging.getLogger(__name__)


def create_engine(
    settings: Settings,
    *,
    host: str | None = None,
    credentials: CredentialProvider | None = None,
    **engine_kwargs: Any,
) -> Engine:
    """Build an engine for `host` (default: the writer) that logs in through `credentials`.

    Without `credentials`, the provider is chosen by `settings.auth`; pass one to
    share a cache between engines or to inject a test double. An engine for any
    host but the writer (the reader endpoint) accepts read-only servers and does
    not retry connects: read-only work falls back to the writer instead.
    """
    host = host or settings.host
    is_writer = host == settings.host
    if credentials is None:
        credentials = provider_for(settings, host)
    url = URL.create("postgresql+psycopg2", host=host, port=settings.port, database=settings.name)
    connect_args: dict[str, Any] = {
        "sslmode": settings.sslmode,
        # Documents the intent for libpq; in psycopg2's green mode (dataaccess.timeouts)
        # libpq leaves the connect timeout to the wait callback, which enforces it.
        "connect_timeout": settings.connect_timeout,
        # A startup parameter, not an option: RDS Proxy accepts it (and it is
        # not session state a transaction could leak to another client).
        "application_name": settings.application_name,
        # A peer that vanished without a reset: keepalives probe an idle
        # connection, tcp_user_timeout bounds unacknowledged data in flight;
        # both give up after settings.dead_peer_seconds.
        "keepalives": 1,
        "keepalives_idle": settings.keepalives_idle,
        "keepalives_interval": settings.keepalives_interval,
        "keepalives_count": settings.keepalives_count,
        "tcp_user_timeout": settings.dead_peer_seconds * 1000,
    }
    if not settings.proxy:
        # Set at login, so every connection has it before its first statement
        # and it costs no extra round trip. RDS Proxy refuses any startup option,
        # and a SET (even SET LOCAL) would pin: behind it the login role's own
        # default applies (migration 0007), checked once by _check_role_timeout.
        connect_args["options"] = f"-c statement_timeout={settings.statement_timeout_ms}"
    if is_writer:
        # Refuse, at login, a writer endpoint that resolves to a read-only server
        # (the old writer during a failover); the connect is then retried.
        connect_args["target_session_attrs"] = "read-write"
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
    timeouts.install()
    budget = settings.connect_retry_budget if is_writer else 0
    sa.event.listen(engine, "do_connect", _connect_hook(credentials, settings, budget=budget))
    sa.event.listen(engine, "handle_error", _invalidate_when_writer_gone)
    if not kwargs["pool_pre_ping"]:
        _ping_when_idle(engine, settings.pool_pre_ping_idle)
    if settings.proxy:
        sa.event.listen(engine, "connect", _check_role_timeout(settings), once=True)
    return engine


# The server's statement_timeout in ms: a read, which pins nothing.
_STATEMENT_TIMEOUT = "SELECT setting::integer FROM pg_settings WHERE name = 'statement_timeout'"


def _check_role_timeout(settings: Settings) -> Any:
    """Warn, once per engine, when the server's statement timeout is not DB_STATEMENT_TIMEOUT_MS.

    Behind RDS Proxy the package cannot set the timeout (the proxy refuses
    startup options, and a SET pins), so the login role's default applies, which
    migration 0007 sets. A mismatch is worth a warning, not a failure: every
    wait stays bounded by DB_SOCKET_TIMEOUT either way.
    """

    def check(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True  # one round trip, no transaction around it
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(_STATEMENT_TIMEOUT)
                (server_ms,) = cursor.fetchone()
        except psycopg2.Error as exc:  # advisory only: the connection's own use will tell
            log.warning("proxy mode: could not read statement_timeout: %s", _first_line(exc))
            return
        finally:
            if not dbapi_connection.closed:
                dbapi_connection.autocommit = autocommit
        if server_ms != settings.statement_timeout_ms:
            log.warning(
                "proxy mode: the server's statement_timeout for this login is %d ms, not "
                "DB_STATEMENT_TIMEOUT_MS=%d; the role's default applies (migration 0007)",
                server_ms,
                settings.statement_timeout_ms,
            )

    return check


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Pre-ping on checkout only connections that sat in the pool `idle_seconds` or more.

    A ping is a round trip, on top of the three of a point read. A connection
    that went back to the pool moments ago has just worked; one that sat idle
    (a frozen Lambda, a quiet night, a failover) is the one worth checking. When a
    statement on an unpinged connection does hit a dead server, SQLAlchemy invalidates the
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
    # Behind RDS Proxy (settings.proxy) the same sizes hold for other reasons: the
    # proxy keeps the real pool and lends a database connection per transaction, so
    # an idle client connection costs the database nothing, and the client pool only
    # needs to cover its process's concurrency. Connections the proxy closed after
    # its IdleClientTimeout (1800 s by default) are pinged before reuse, being idle.
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
        # No thread waits for a pool slot longer than a connect could take.
        "pool_timeout": settings.connect_timeout + settings.connect_retry_budget,
    }


def _connect_hook(credentials: CredentialProvider, settings: Settings, *, budget: float) -> Any:
    def do_connect(
        dialect: sa.Dialect, conn_rec: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]
    ) -> Any:
        # Reported however it ends (dataaccess.metrics); the time includes minting a
        # token or reading a secret, and the backoff between attempts.
        started = time.perf_counter()
        attempts: list[None] = []  # one entry per attempt made
        try:
            connection = connect_with_retries(dialect, cargs, cparams, attempts)
        except BaseException:
            metrics.connect_finished(time.perf_counter() - started, len(attempts), ok=False)
            raise
        metrics.connect_finished(time.perf_counter() - started, len(attempts), ok=True)
        return connection

    def connect_with_retries(
        dialect: sa.Dialect, cargs: tuple[Any, ...], cparams: dict[str, Any], attempts: list[None]
    ) -> Any:
        deadline = deadline_after(budget)
        delays = backoff_delays()
        retried_cached = False
        refused_until: float | None = None
        while True:
            attempts.append(None)
            credential = credentials.get()
            # No single attempt outlives the budget (but libpq needs its floor).
            limit = max(
                timeouts.LIBPQ_MIN_CONNECT_TIMEOUT,
                min(settings.connect_timeout, deadline - time.monotonic()),
            )
            params = {
                **cparams,
                "user": credential.user,
                "password": credential.password,
                "connection_factory": timeouts.factory(
                    connect_limit=limit, wait_limit=settings.socket_timeout
                ),
            }
            try:
                return dialect.connect(*cargs, **params)
            except psycopg2.OperationalError as exc:
                stop_at = deadline
                if is_auth_failure(exc):
                    credentials.invalidate()
                    if credential.cached and not retried_cached:
                        log.info(
                            "login refused with a cached credential; retrying with a fresh one"
                        )
                        retried_cached = True
                        continue
                    if not credentials.rotates:
                        raise
                    # A rotation between setSecret and finishSecret: the server has
                    # the new password before the secret's current version does.
                    if refused_until is None:
                        refused_until = time.monotonic() + settings.secret_retry_window
                    stop_at = min(deadline, refused_until)
                elif not is_transient_connect_error(exc):
                    raise
                delay = next(delays)
                if time.monotonic() + delay >= stop_at:
                    raise
                log.warning("connect failed, retrying in %.2f s: %s", delay, _first_line(exc))
                time.sleep(delay)

    return do_connect


def _invalidate_when_writer_gone(context: ExceptionContext) -> None:
    """Treat 'this server is no longer a writer' as a disconnect: SQLAlchemy then
    invalidates the whole pool, so the next checkout connects (and resolves) anew.
    """
    if context.is_disconnect:
        return
    dbapi_connection = _dbapi_connection(context)
    if getattr(dbapi_connection, "timed_out", False):
        context.is_disconnect = True  # our socket bound fired (dataaccess.timeouts)
        return
    orig = context.original_exception
    if not writer_gone(orig):
        return
    if getattr(orig, "pgcode", None) == "25006" and getattr(dbapi_connection, "readonly", None):
        return  # a write inside our own READ ONLY unit of work: a bug, not a failover
    context.is_disconnect = True
    # SQLAlchemy soft-invalidates the other pooled connections (each is replaced at
    # its next checkout); close the idle ones now, so none stays on that server.
    if context.engine is not None:
        context.engine.pool.dispose()


def _dbapi_connection(context: ExceptionContext) -> Any:
    if context.connection is None or context.connection.closed:
        return None
    try:
        return context.connection.connection.dbapi_connection
    except sa.exc.SQLAlchemyError:
        return None


def _first_line(exc: BaseException) -> str:
    # A connect error names host, port and user, never the password.
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
