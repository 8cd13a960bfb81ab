"""A stand-in for RDS Proxy (PostgreSQL) in front of a local server: what it refuses, what it sees.

Two rules of RDS Proxy decide whether a client works well behind it, and both
apply on the wire, where this stand-in sits:

- it refuses a startup packet that carries command-line options (libpq's
  ``options``, such as ``-c statement_timeout=...``) with SQLSTATE 0A000,
  "Feature not supported: RDS Proxy currently doesn't support command-line
  options." AWS documents what a startup packet may carry: ``user``,
  ``database``, ``replication`` and the runtime parameters in
  `STARTUP_PARAMETERS` ("Considerations for connecting to a proxy with
  PostgreSQL");
- it *pins* a client connection to one server connection for the rest of the
  session when the session changes state other sessions must not see (AWS,
  "Avoiding pinning an RDS Proxy", conditions for PostgreSQL, and those for all
  engines); `pin_reason` names the condition a statement meets, if any.

Every session's startup parameters and every statement its client sends are
recorded (`sessions`): the simple-protocol queries, the queries of any
extended-protocol Parse, and the kinds of the other messages. Nothing of the
authentication exchange is kept. A test can so check everything a client
sends, its driver's and SQLAlchemy's own statements included, which the
client-side hooks do not all see.

Unlike RDS Proxy it multiplexes nothing (each client connection gets its own
server connection), speaks no TLS (an SSLRequest or GSSENCRequest is answered
'N', so clients must use a non-verifying sslmode against it) and drops a
CancelRequest unanswered (which RDS Proxy does not support for PostgreSQL
either).
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from types import TracebackType

# Startup-phase request codes (PostgreSQL protocol, "Message Formats").
_PROTOCOL_3 = 196608
_CANCEL_REQUEST = 80877102
_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104

OPTIONS_REFUSED = "Feature not supported: RDS Proxy currently doesn't support command-line options."
# What AWS documents a startup packet to the proxy may carry.
STARTUP_PARAMETERS = frozenset(
    {
        "user",
        "database",
        "replication",
        "application_name",
        "client_encoding",
        "DateStyle",
        "TimeZone",
        "extra_float_digits",
    }
)
# "Any statement with a text size greater than 16 KB causes the proxy to pin the session."
MAX_UNPINNED_BYTES = 16 * 1024

_START = r"(?:^|;)\s*"  # a statement's first word: at the start, or after a ';'
_PINNING: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern, re.IGNORECASE))
    for reason, pattern in (
        ("a SET or RESET command", _START + r"(?:SET|RESET)\b"),
        ("setting a parameter (set_config)", r"\bset_config\s*\("),
        ("a prepared statement", _START + r"(?:PREPARE|EXECUTE|DEALLOCATE)\b"),
        ("discarding the session state", _START + r"DISCARD\b"),
        (
            "a temporary table, sequence or view",
            r"\bCREATE\s+(?:(?:GLOBAL|LOCAL)\s+)?TEMP(?:ORARY)?\b|\bINTO\s+TEMP(?:ORARY)?\b",
        ),
        ("declaring a cursor", _START + r"DECLARE\b"),
        ("listening on a notification channel", _START + r"(?:LISTEN|UNLISTEN)\b"),
        ("loading a library module", _START + r"LOAD\b"),
        ("a sequence function", r"\b(?:nextval|setval|currval|lastval)\s*\("),
        # pg_advisory_lock, _lock_shared, pg_try_..., pg_advisory_unlock[_all]: held by
        # the session. The _xact_ ones end with their transaction and do not match.
        (
            "a session-level advisory lock",
            r"\bpg_(?:try_)?advisory_(?:un)?lock(?:_shared|_all)?\s*\(",
        ),
    )
)


def pin_reason(statement: str) -> str | None:
    """The RDS Proxy pinning condition `statement` meets (PostgreSQL), or None.

    Any SET counts, SET LOCAL and SET TRANSACTION included: AWS lists "using SET
    commands" and "setting parameters" for PostgreSQL without the exception it
    makes for SET LOCAL on MySQL.
    """
    if len(statement.encode()) > MAX_UNPINNED_BYTES:
        return f"a statement over {MAX_UNPINNED_BYTES // 1024} KB"
    for reason, pattern in _PINNING:
        if pattern.search(statement):
            return reason
    return None


@dataclass
class Session:
    """One client connection as the proxy saw it."""

    startup: dict[str, str] = field(default_factory=dict)
    refused: str | None = None  # the error the stand-in answered the startup with
    statements: list[str] = field(default_factory=list)  # simple-protocol queries, in order
    parsed: list[str] = field(default_factory=list)  # extended-protocol Parse queries
    other: list[str] = field(default_factory=list)  # kinds of any other message

    def pins(self) -> list[tuple[str, str]]:
        """(reason, statement) for everything in this session that would pin it."""
        found = [("the extended query protocol", query) for query in self.parsed]
        for statement in self.statements:
            reason = pin_reason(statement)
            if reason is not None:
                found.append((reason, statement))
        return found


# Frontend messages after the startup packet, by type byte: recorded by kind only.
# 'p' (password, SASL) is never looked into.
_KINDS = {
    b"B": "Bind",
    b"C": "Close",
    b"D": "Describe",
    b"E": "Execute",
    b"F": "FunctionCall",
    b"H": "Flush",
    b"S": "Sync",
    b"c": "CopyDone",
    b"d": "CopyData",
    b"f": "CopyFail",
}


class ProxyStandIn:
    """A threaded PostgreSQL-aware TCP proxy on 127.0.0.1:`port` to one server.

    Use as a context manager, or call `close()`. Two threads per connection
    (one per direction), all daemons.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._lock = threading.Lock()
        self._sessions: list[Session] = []
        self._open: set[socket.socket] = set()
        self._closed = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(
            target=self._accept, name=f"rdsp-{self.port}", daemon=True
        )
        self._acceptor.start()

    @property
    def sessions(self) -> list[Session]:
        """Every session so far, in the order the clients connected."""
        with self._lock:
            return list(self._sessions)

    def statements(self) -> list[str]:
        """Every simple-protocol statement of every session, in order within each session."""
        return [statement for session in self.sessions for statement in session.statements]

    def close(self) -> None:
        """Stop listening and end every connection (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            open_sockets = list(self._open)
        with contextlib.suppress(OSError):  # wake the blocked accept()
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        self._acceptor.join(timeout=5)
        self._listener.close()
        for sock in open_sockets:
            _shut(sock)

    def __enter__(self) -> ProxyStandIn:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- threads -----------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    client.close()
                    return
                self._open.add(client)
            threading.Thread(
                target=self._serve, args=(client,), name=f"rdsp-{self.port}-in", daemon=True
            ).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        pump: threading.Thread | None = None
        try:
            startup = _read_startup(client)
            if startup is None:  # a CancelRequest, or a client gone before its startup
                return
            session = Session(startup=_parameters(startup))
            with self._lock:
                self._sessions.append(session)
            if "options" in session.startup:
                session.refused = OPTIONS_REFUSED
                client.sendall(_error_response("FATAL", "0A000", OPTIONS_REFUSED))
                return
            upstream = socket.create_connection(self._target, timeout=10)
            upstream.settimeout(None)
            with self._lock:
                self._open.add(upstream)
            upstream.sendall(startup)
            pump = threading.Thread(
                target=_pump, args=(upstream, client), name=f"rdsp-{self.port}-out", daemon=True
            )
            pump.start()
            while (message := _read_message(client)) is not None:
                self._record(session, message)
                upstream.sendall(message)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    _shut(sock)
            if pump is not None:
                pump.join(timeout=10)
            with self._lock:
                for sock in (client, upstream):
                    if sock is not None:
                        self._open.discard(sock)
                        sock.close()

    def _record(self, session: Session, message: bytes) -> None:
        kind, body = message[:1], message[5:]
        if kind == b"Q":
            session.statements.append(_cstring(body))
        elif kind == b"P":  # Parse: statement name, then its query
            name_end = body.index(b"\0")
            session.parsed.append(_cstring(body[name_end + 1 :]))
        elif kind in _KINDS:
            session.other.append(_KINDS[kind])


def _read_startup(sock: socket.socket) -> bytes | None:
    """The client's StartupMessage, whole; SSL and GSS encryption requests get an 'N' first."""
    while True:
        head = _recv_exact(sock, 8)
        if head is None:
            return None
        length, code = struct.unpack("!ii", head)
        rest = _recv_exact(sock, length - 8)
        if rest is None:
            return None
        if code in (_SSL_REQUEST, _GSSENC_REQUEST):
            sock.sendall(b"N")
            continue
        if code == _CANCEL_REQUEST:
            return None
        return head + rest


def _parameters(startup: bytes) -> dict[str, str]:
    """A StartupMessage's name/value pairs."""
    fields = startup[8:].split(b"\0")
    pairs = [field.decode("utf-8", "replace") for field in fields]
    return {pairs[i]: pairs[i + 1] for i in range(0, len(pairs) - 1, 2) if pairs[i]}


def _read_message(sock: socket.socket) -> bytes | None:
    """One frontend message (type byte, length, body), or None at the end of the stream."""
    head = _recv_exact(sock, 5)
    if head is None:
        return None
    (length,) = struct.unpack("!i", head[1:])
    body = _recv_exact(sock, length - 4)
    return None if body is None else head + body


def _error_response(severity: str, sqlstate: str, message: str) -> bytes:
    fields = b"".join(
        code + value.encode() + b"\0"
        for code, value in ((b"S", severity), (b"V", severity), (b"C", sqlstate), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


def _cstring(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n > 0:
        chunk = sock.recv(min(n, 65536))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Server to client, byte for byte; at the end of either, wake the other direction."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    _shut(dst)
    _shut(src)


def _shut(sock: socket.socket) -> None:
    # shutdown, not close: it wakes a thread blocked in recv() on the socket without
    # freeing a descriptor under it; the thread that owns the socket closes it.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
