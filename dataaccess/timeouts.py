"""A client-side bound on every wait for the server: libpq has none once a query is sent.

TCP keepalives and `tcp_user_timeout` notice a peer whose packets stop being
acknowledged. They cannot notice a peer that acknowledges and then says nothing:
a wedged proxy, a half-open NAT entry, a server stuck below `statement_timeout`.
A thread blocked in libpq then waits forever. psycopg2's wait callback (its
"green" mode, as psycogreen uses) hands every wait to Python; ours waits on the
socket with a limit and, past it, shuts the socket down. libpq then fails the
call as a lost connection, which SQLAlchemy treats as a disconnect: the
connection is invalidated, never reused.

In green mode libpq does not enforce `connect_timeout` itself (it only does in
blocking connects), so the connect phase uses the same callback with the
connect timeout as its limit.

The callback is process-wide (psycopg2 allows one); connections that are not
`BoundedConnection`s, such as a library's own psycopg2 connections, wait as in
blocking mode: their `connect_timeout` bounds the login, nothing bounds a query.
"""

from __future__ import annotations

import os
import select
import socket
from typing import Any

import psycopg2
import psycopg2.extensions as ext

# libpq counts a connect_timeout under 2 s as 2 s.
LIBPQ_MIN_CONNECT_TIMEOUT = 2


class BoundedConnection(ext.connection):
    """A psycopg2 connection whose waits for the server are bounded.

    `connect_limit` bounds the login; afterwards `wait_limit` bounds each wait
    for the server's next bytes (0 or None: no bound).
    """

    def __init__(
        self, dsn: str, *args: Any, connect_limit: float, wait_limit: float, **kwargs: Any
    ) -> None:
        self.wait_limit: float | None = connect_limit or None
        self.timed_out = False
        super().__init__(dsn, *args, **kwargs)
        self.wait_limit = wait_limit or None


def factory(*, connect_limit: float, wait_limit: float) -> Any:
    """A psycopg2 `connection_factory` making BoundedConnections with these limits."""

    def make(dsn: str, *args: Any, **kwargs: Any) -> BoundedConnection:
        return BoundedConnection(
            dsn, *args, connect_limit=connect_limit, wait_limit=wait_limit, **kwargs
        )

    return make


def wait(conn: ext.connection) -> None:
    """psycopg2 wait callback: poll until done, never waiting longer than the limit."""
    limit = conn.wait_limit if isinstance(conn, BoundedConnection) else _login_limit(conn)
    timeout_ms = None if limit is None else int(limit * 1000)
    while True:
        state = conn.poll()
        if state == ext.POLL_OK:
            return
        # poll(2), not select(2): no FD_SETSIZE ceiling in a busy process.
        fd = conn.fileno()
        poller = select.poll()
        if state == ext.POLL_READ:
            poller.register(fd, select.POLLIN)
        elif state == ext.POLL_WRITE:
            poller.register(fd, select.POLLOUT)
        else:  # pragma: no cover - psycopg2 documents no other state
            raise psycopg2.OperationalError(f"bad state from poll: {state}")
        if not poller.poll(timeout_ms):
            _give_up(conn, fd)


_CONNECTED = frozenset({ext.STATUS_READY, ext.STATUS_BEGIN, ext.STATUS_PREPARED})


def _login_limit(conn: ext.connection) -> float | None:
    """libpq's own `connect_timeout` for a foreign connection still logging in, else None.

    Blocking libpq enforces it; in green mode that falls to us. Like libpq: 0 or
    unset waits forever, and anything under its floor counts as the floor.
    """
    if conn.status in _CONNECTED:
        return None
    raw = ext.parse_dsn(conn.dsn).get("connect_timeout", "0")
    try:
        seconds = int(raw)
    except ValueError:
        return None
    return None if seconds <= 0 else float(max(seconds, LIBPQ_MIN_CONNECT_TIMEOUT))


def _give_up(conn: ext.connection, fd: int) -> None:
    # Shut the socket down rather than close the connection from inside its own
    # call: libpq then reports a lost connection and psycopg2 unwinds cleanly.
    if isinstance(conn, BoundedConnection):
        conn.timed_out = True
    with socket.socket(fileno=os.dup(fd)) as sock:
        sock.shutdown(socket.SHUT_RDWR)


def install() -> None:
    """Route psycopg2's waits through `wait` (idempotent)."""
    if ext.get_wait_callback() is not wait:
        ext.set_wait_callback(wait)
