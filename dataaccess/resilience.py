"""What counts as a transient database failure, and how long a connect may keep trying.

The failure model (docs/RELIABILITY.md) in code: which errors a retry can cure,
which mean "the server behind this endpoint is no longer a usable writer", and
the deadline that bounds every retry. Retries wait with exponential backoff and
full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): many
clients that lost the same server do not come back in lockstep.
"""

from __future__ import annotations

import contextvars
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
from sqlalchemy import exc as sa_exc

# SQLSTATEs after which the connection's server is no writer to keep talking to:
# read_only_sql_transaction (a writer endpoint now on a read-only server, as after
# a failover), admin_shutdown, crash_shutdown, cannot_connect_now.
WRITER_GONE_SQLSTATES = frozenset({"25006", "57P01", "57P02", "57P03"})

# libpq reports connect-time failures as text only (no SQLSTATE reaches the client
# before a session exists), so these fragments are what there is to go on.
# A refused login ("PAM authentication failed" is what RDS says to a stale IAM token):
_AUTH_FAILURES = ("password authentication failed", "PAM authentication failed")
# States a restart, failover, resume or overload passes through:
_TRANSIENT_CONNECT = (
    "could not connect to server",
    "connection refused",
    "connection reset by peer",
    "timeout expired",
    "timed out",
    "the database system is starting up",  # 57P03
    "the database system is shutting down",  # 57P03
    "the database system is in recovery mode",  # 57P03
    "the database system is not yet accepting connections",  # 57P03
    "the database system is not accepting connections",  # 57P03 (hot standby off)
    "server closed the connection unexpectedly",
    "terminating connection",  # 57P01
    "could not receive data from server",
    "could not send data to server",
    "ssl syscall error",
    "eof detected",
    "session is read-only",  # target_session_attrs=read-write on a read-only server
    "server is in hot standby mode",  # the same check, against a standby
    "too many clients already",  # 53300
    "remaining connection slots are reserved",  # 53300
)

# Backoff between connect attempts: first wait up to BASE, doubling, never over CAP.
BACKOFF_BASE = 0.1
BACKOFF_CAP = 1.0

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "dataaccess_connect_deadline", default=None
)


def is_auth_failure(exc: BaseException) -> bool:
    """True when the server refused the credential, as opposed to any other connect error."""
    return isinstance(exc, psycopg2.OperationalError) and any(
        fragment in str(exc) for fragment in _AUTH_FAILURES
    )


def is_transient_connect_error(exc: BaseException) -> bool:
    """True when a failed connect may succeed if tried again soon."""
    if not isinstance(exc, psycopg2.OperationalError):
        return False
    message = str(exc).lower()
    return any(fragment in message for fragment in _TRANSIENT_CONNECT)


def writer_gone(exc: BaseException) -> bool:
    """True when a statement's error says its server stopped being a usable writer."""
    return getattr(exc, "pgcode", None) in WRITER_GONE_SQLSTATES


def is_unavailable(exc: BaseException) -> bool:
    """True when the database could not be used at all: worth a 503 and a later retry.

    A statement-level error that the server answered (a constraint, a bad value)
    is not; a lost or refused connection, a timed-out statement, no pool slot, a
    demoted writer and an unreachable credential source are.
    """
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        pgcode = getattr(exc.orig, "pgcode", None)
        if pgcode is None:
            return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))
        # query_canceled (a statement timeout) and the writer-gone family.
        return pgcode == "57014" or pgcode in WRITER_GONE_SQLSTATES
    if isinstance(exc, (sa_exc.TimeoutError, sa_exc.DisconnectionError)):
        return True
    # botocore's errors, without importing botocore here: STS, Secrets Manager.
    return type(exc).__module__.startswith("botocore.")


def backoff_delays(
    *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP, rng: random.Random | None = None
) -> Iterator[float]:
    """Full-jitter delays: uniform(0, min(cap, base * 2**attempt)), forever."""
    draw = (rng or random).uniform  # jitter, not secrets
    attempt = 0
    while True:
        yield draw(0, min(cap, base * 2**attempt))
        attempt = min(attempt + 1, 30)


def deadline_after(budget: float) -> float:
    """The monotonic time a retry loop started now must stop by.

    The earlier of `budget` from now and the deadline an enclosing
    `connect_deadline` set (a Lambda invocation's remaining time).
    """
    own = time.monotonic() + budget
    outer = _deadline.get()
    return own if outer is None else min(own, outer)


@contextmanager
def connect_deadline(seconds: float) -> Iterator[None]:
    """Within this block, no connect keeps retrying past `seconds` from now."""
    token = _deadline.set(time.monotonic() + max(0.0, seconds))
    try:
        yield
    finally:
        _deadline.reset(token)
