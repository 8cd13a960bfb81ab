"""Why a stock-events record failed, and how that is written to a log or a trace.

The error classes a record can fail with besides the domain's own (`DomainError`),
and `describe`, the one place that turns any error into text safe to log: never a
statement's parameters (the event bodies) and never a credential.
"""

from __future__ import annotations

import traceback

from sqlalchemy import exc as sa_exc

from dataaccess.errors import DomainError
from dataaccess.resilience import is_auth_failure, is_unavailable


class MalformedEventError(ValueError):
    """A record body that is not a valid stock event; the message names the field, not its value."""


class DatabaseUnavailableError(RuntimeError):
    """The database could not be reached (or refused the login) while applying this batch."""


class StockEventFailedError(RuntimeError):
    """A record failed with a database or unexpected error (not a domain rule); the message
    names only the error class and SQLSTATE, never the statement's parameters."""


def rejected(error: BaseException) -> bool:
    """True for a record that cannot succeed as sent (malformed, or refused by a domain rule):
    redelivery cannot help it, unlike a database failure. Metrics and logs count by it."""
    return isinstance(error, (MalformedEventError, DomainError))


def cannot_reach_database(exc: BaseException) -> bool:
    """No usable session with the database: unreachable, lost, no longer a writer, or the
    login refused. A statement timeout is not: it is this batch's statements, so the
    per-record fallback finds the record that causes it."""
    if isinstance(exc, sa_exc.DBAPIError) and getattr(exc.orig, "pgcode", None) == "57014":
        return False
    return is_unavailable(exc) or (isinstance(exc, sa_exc.DBAPIError) and is_auth_failure(exc.orig))


def unreachable(exc: BaseException) -> DatabaseUnavailableError:
    """A record's failure when `cannot_reach_database(exc)`."""
    return DatabaseUnavailableError(f"database unreachable: {describe(exc)}")


def describe(exc: BaseException) -> str:
    """`exc` as one line for a log or a trace (the module docstring says what it never holds)."""
    if isinstance(exc, (MalformedEventError, DomainError, DatabaseUnavailableError)):
        # Our own messages name fields, skus and event ids, never credentials or values.
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, StockEventFailedError):
        return str(exc)
    if isinstance(exc, sa_exc.DBAPIError):
        # str(exc) carries the SQL and its parameters. A server error's text may quote
        # a value; a connection error's text (host, port, user, reason) never does.
        pgcode = getattr(exc.orig, "pgcode", None)
        if pgcode is not None:
            return f"{type(exc.orig).__name__} (SQLSTATE {pgcode})"
        first_line = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ""
        return f"{type(exc.orig).__name__}: {first_line}".rstrip(": ")
    return type(exc).__name__


def stack(exc: BaseException) -> str:
    """Where an unexpected error was raised: frames only, not the message (it may hold values)."""
    return "".join(traceback.format_tb(exc.__traceback__)[-4:])
