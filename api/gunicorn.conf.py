"""Gunicorn settings for the container and `make run`; every knob comes from the environment.

gunicorn -c api/gunicorn.conf.py 'api:create_app()'
"""

import contextlib
import gc
import json
import os
import re
import selectors
import time
from functools import partial

from gunicorn.workers.gthread import ThreadWorker

# 0.0.0.0 in the container (the ALB reaches the task's ENI); `make run` binds 127.0.0.1.
bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# worker_class is BufferingThreadWorker (below): gthread whose event loop reads each
# request, head and body, before a thread sees it; a slow client holds a socket, not a thread.
# The largest head and body the loop buffers per connection. The head's cap is the ALB's
# (64 KB of request line and headers); the body's is the app's (api.jsonbody.MAX_BODY_BYTES):
# anything larger is refused (431/413) without a thread ever waiting on it.
max_buffered_head = 64 * 1024
max_buffered_body = 64 * 1024
# From a request's first byte to its last: past this the connection gets a 408 and is closed.
request_read_timeout = float(os.environ.get("GUNICORN_REQUEST_READ_TIMEOUT", "30"))
# ECS sends SIGTERM and waits stopTimeout (30 s by default) before SIGKILL:
# finish in-flight requests well within it.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# Longer than the ALB's 60 s idle timeout, so the ALB closes idle connections first.
keepalive = 75
# The app writes one JSON line per request; gunicorn's access log would repeat it.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# Heartbeat files in memory, not on the container's overlay filesystem.
_SHM = "/dev/shm"  # noqa: S108 (gunicorn's documented choice for containers)
worker_tmp_dir = _SHM if os.path.isdir(_SHM) else None
# No preload: each worker builds its own app and engine, so no pooled
# connection is ever shared across a fork.
preload_app = False
# Gunicorn's runtime control socket is one fixed path per user: several
# servers on one machine (tests, make run) would fight over it, and nothing here uses it.
control_socket_disable = True


# The youngest generation is collected after this many new container objects instead of
# Python's 700: a request makes a few thousand (WSGI environ, Flask's contexts, SQLAlchemy's
# result, pydantic's model) and leaves almost none in a cycle, so at 700 the collector ran
# several times per request. It measured +0.05 to +0.15 on B5's ratio (bench/RESULTS.md);
# the cost is at most that many objects' worth of garbage held a little longer.
GC_YOUNG_THRESHOLD = 50_000


def post_worker_init(worker: object) -> None:
    """Freeze what the worker has loaded (the app, its imports, SQLAlchemy's caches), and
    collect the youngest generation less often.

    Those objects live as long as the worker; frozen, Python's cyclic garbage
    collector stops re-scanning them on every full collection, so each request
    pays only for the objects it makes.
    """
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 100)


_CRLF2 = b"\r\n\r\n"
_HEADER = re.compile(rb"^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$")
_INCOMPLETE, _COMPLETE = object(), object()


def _canned(status: str, detail: str) -> bytes:
    """A whole response, problem+json like every other error of the API, closing the connection."""
    code, title = status.split(" ", 1)
    body = json.dumps(
        {"type": "about:blank", "title": title, "status": int(code), "detail": detail}
    )
    return (
        f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


_TIMEOUT = _canned("408 Request Timeout", "the request did not arrive in time")
_HEAD_TOO_BIG = _canned(
    "431 Request Header Fields Too Large", "the request's headers are too large"
)
_BODY_TOO_BIG = _canned("413 Content Too Large", "the request body is too large")


def _chunked_end(buf: bytes, start: int, limit: int) -> int | bytes | None:
    """Where a chunked body starting at `start` ends (after its trailers); None: not yet.

    Bytes (a canned response) when it is larger than `limit`; -1 when it is malformed,
    which gunicorn's own parser then reports.
    """
    pos, size = start, 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            chunk = int(buf[pos:eol].split(b";", 1)[0].strip(), 16)
        except ValueError:
            return -1
        size += chunk
        if size > limit:
            return _BODY_TOO_BIG
        if chunk == 0:
            # Trailer lines, if any, then an empty line.
            end = buf.find(_CRLF2, eol)
            return None if end < 0 else end + len(_CRLF2)
        pos = eol + 2 + chunk + 2
        if len(buf) < pos:
            return None


def _request_state(buf: bytearray) -> object | bytes:
    """Whether `buf` holds a whole request: _COMPLETE, _INCOMPLETE, or a canned refusal.

    Only the framing is read (Content-Length, Transfer-Encoding). Anything this does not
    understand is _COMPLETE: gunicorn's parser then answers it from the buffered head
    (a 400), without reading further.
    """
    head_end = buf.find(_CRLF2, 0, max_buffered_head + len(_CRLF2))
    if head_end < 0:
        return _HEAD_TOO_BIG if len(buf) > max_buffered_head else _INCOMPLETE
    body_start = head_end + len(_CRLF2)
    lengths, chunked = [], False
    for line in bytes(buf[:head_end]).split(b"\r\n")[1:]:
        match = _HEADER.match(line)
        if not match:
            continue
        name = match.group(1).lower()
        if name == b"content-length":
            lengths.append(match.group(2))
        elif name == b"transfer-encoding":
            chunked = chunked or b"chunked" in match.group(2).lower()
    if chunked:
        if lengths:
            return _COMPLETE  # both: gunicorn refuses it
        end = _chunked_end(bytes(buf), body_start, max_buffered_body)
        if isinstance(end, bytes):
            return end
        return _INCOMPLETE if end is None else _COMPLETE
    if not lengths:
        return _COMPLETE
    if len(lengths) > 1 or not lengths[0].isdigit():
        return _COMPLETE  # gunicorn refuses it
    length = int(lengths[0])
    if length > max_buffered_body:
        return _BODY_TOO_BIG
    return _COMPLETE if len(buf) >= body_start + length else _INCOMPLETE


class BufferingThreadWorker(ThreadWorker):
    """gthread, except that a request reaches a thread only once it has fully arrived.

    Stock gthread hands a connection to a thread as soon as its first byte arrives; the
    thread then reads the rest with blocking reads and no deadline, so a few clients
    trickling a body take every thread (/healthz included). Here the worker's event loop
    reads each request without blocking into a per-connection buffer (at most
    max_buffered_head + max_buffered_body bytes), and submits it to the thread pool with
    the bytes preloaded into gunicorn's parser: a thread never waits for a client.
    A connection idle before its request has `keepalive` seconds; a started request has
    `request_read_timeout` seconds to arrive in full.
    """

    def init_process(self) -> None:
        self.buffering: dict[object, tuple[bytearray, float, bool]] = {}
        super().init_process()

    def enqueue_req(self, conn) -> None:  # every path to the thread pool comes through here
        if self.cfg.is_ssl or getattr(conn, "request_buffered", False):
            conn.request_buffered = False
            super().enqueue_req(conn)
            return
        # Read-ahead already held (a pipelined request) counts as arrived bytes.
        held = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.sock.setblocking(False)
        wait = request_read_timeout if held else self.cfg.keepalive
        self.buffering[conn] = (bytearray(held), time.monotonic() + wait, False)
        if not self._advance(conn):
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))

    def _readable(self, conn, _sock) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        buf, deadline, continued = self.buffering[conn]
        if not buf:
            deadline = time.monotonic() + request_read_timeout
        buf += data
        self.buffering[conn] = (buf, deadline, continued)
        self._advance(conn)

    def _advance(self, conn) -> bool:
        """Dispatch, refuse or keep buffering `conn`; True once it has left the buffer."""
        buf, deadline, continued = self.buffering[conn]
        state = _request_state(buf) if buf else _INCOMPLETE
        if state is _INCOMPLETE:
            if not continued and _expects_continue(buf):
                # The client waits for this before sending its body (RFC 9110 10.1.1).
                self._send(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
                self.buffering[conn] = (buf, deadline, True)
            return False
        if isinstance(state, bytes):
            self._drop(conn, state)
            return True
        self._unregister(conn)
        del self.buffering[conn]
        conn.init()  # the parser; plain TCP only (TLS stays with stock gthread, see above)
        conn.parser.unreader.unread(bytes(buf))
        conn.data_ready = True
        conn.request_buffered = True
        super().enqueue_req(conn)
        return True

    def handle_request(self, req, conn):
        # The body is here already: gunicorn's own 100 Continue would be late or a second one.
        req._expected_100_continue = False
        return super().handle_request(req, conn)

    def _send(self, conn, data: bytes) -> None:
        with contextlib.suppress(OSError):
            conn.sock.send(data)

    def _unregister(self, conn) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)

    def _drop(self, conn, response: bytes = b"") -> None:
        self._unregister(conn)
        self.buffering.pop(conn, None)
        if response:
            self._send(conn, response)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        for conn, (buf, deadline, _) in list(self.buffering.items()):
            if deadline <= now:
                self._drop(conn, _TIMEOUT if buf else b"")

    def _cap_keepalive(self, deadline: float) -> None:
        # Stopping: idle connections close soon, as kept-alive ones do; a request that
        # has started keeps its deadline (graceful_timeout bounds it anyway).
        super()._cap_keepalive(deadline)
        for conn, (buf, current, continued) in self.buffering.items():
            if not buf:
                self.buffering[conn] = (buf, min(current, deadline), continued)


def _expects_continue(buf: bytearray) -> bool:
    head_end = buf.find(_CRLF2)
    if head_end < 0:
        return False
    head = bytes(buf[:head_end]).lower()
    return b"\r\nexpect:" in head and b"100-continue" in head and b"http/1.1" in head[:200]


worker_class = BufferingThreadWorker
