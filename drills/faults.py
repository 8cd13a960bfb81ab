"""Real faults for failure drills, nothing mocked.

`TcpForwarder` stands in for Aurora's cluster endpoint (a DNS name that is
re-pointed on failover, and behind which connections can die or go silent);
`ReplicatedPair` stands in for the writer and a reader: a primary and a hot
standby that can be promoted, with the old primary coming back read-only.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from pathlib import Path
from types import TracebackType

import psycopg2

from scripts.localpg import LocalPostgres, free_port

_CHUNK = 65536
# SO_LINGER on, timeout 0: close() discards the socket with a RST instead of a FIN.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class _Link:
    """One client connection and its upstream: None while connecting, or if it never had one."""

    def __init__(self, client: socket.socket, blackholed: bool) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.blackholed = blackholed
        self.ending = False
        self.pumps = 1  # client -> upstream; upstream -> client once connected
        self.lock = threading.Lock()  # every socket operation but recv/send is made under it

    def sockets(self) -> list[socket.socket]:
        return [sock for sock in (self.client, self.upstream) if sock is not None]

    def end(self, *, abort: bool) -> None:
        """Wake the pumps so that they exit; the last one out closes the sockets.

        The pumps own the sockets, so that no file descriptor is closed under a
        thread blocked on it. An orderly end is SHUT_RDWR (a FIN both ways). An
        abort sets SO_LINGER 0 and only SHUT_RD, which wakes a blocked recv
        without sending anything, so that the peers see the RST of the close.
        """
        with self.lock:
            if self.ending:
                return
            self.ending = True
            for sock in self.sockets():
                with contextlib.suppress(OSError):
                    if abort:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
                    sock.shutdown(socket.SHUT_RD if abort else socket.SHUT_RDWR)


class TcpForwarder:
    """A threaded TCP proxy on 127.0.0.1:`port`, forwarding each connection to a target.

    Drills point clients at it instead of at a server, then re-point it (a
    failover's DNS flip), reset every connection (an instance dying), or turn
    it into a black hole (a network partition: no reset, just silence, which
    only client-side timeouts and keepalives can detect).
    Two threads per connection, one per direction; all of them daemons.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._blackholed = False
        self._closed = False
        self._links: set[_Link] = set()
        self._changed = threading.Condition()  # guards the fields above
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name=f"fwd-{self.port}", daemon=True)
        self._acceptor.start()

    def point_to(self, port: int, host: str = "127.0.0.1") -> None:
        """Send new connections to (host, port); connections already made stay where they are."""
        with self._changed:
            self._target = (host, port)

    def drop_all(self) -> None:
        """Reset every forwarded connection, both sides, as a crashed host would."""
        with self._changed:
            links = list(self._links)
        for link in links:
            link.end(abort=True)
        self._wait_gone(links)

    def blackhole(self, on: bool) -> None:
        """While on, pass no bytes and answer no new connection; existing ones stay silent for good.

        A connection caught by the black hole never recovers (its bytes are
        lost, as in a real partition): it stays open and silent until its
        client gives up and closes it. Turning it off only lets new ones through.
        """
        with self._changed:
            self._blackholed = on
            if on:
                for link in self._links:
                    link.blackholed = True

    def active(self) -> int:
        """How many client connections are open."""
        with self._changed:
            return len(self._links)

    def close(self) -> None:
        """Stop listening and reset every connection (idempotent)."""
        with self._changed:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(OSError):  # wake the blocked accept()
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        self._acceptor.join(timeout=5)
        self._listener.close()
        self.drop_all()

    def __enter__(self) -> TcpForwarder:
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
            with self._changed:
                if self._closed:
                    client.close()
                    return
                link = _Link(client, self._blackholed)
                self._links.add(link)
                target = self._target
            threading.Thread(
                target=self._serve, args=(link, target), name=f"fwd-{self.port}-in", daemon=True
            ).start()

    def _serve(self, link: _Link, target: tuple[str, int]) -> None:
        """Connect upstream (unless black-holed), then pump client -> upstream."""
        if not link.blackholed:
            try:
                upstream = socket.create_connection(target, timeout=10)
            except OSError:
                link.end(abort=True)  # nothing listens there: the client gets a reset
            else:
                upstream.settimeout(None)
                with link.lock:
                    if link.ending:
                        upstream.close()
                    else:
                        link.upstream = upstream
                        link.pumps += 1
                        threading.Thread(
                            target=self._pump,
                            args=(link, upstream, link.client, False),
                            name=f"fwd-{self.port}-out",
                            daemon=True,
                        ).start()
        self._pump(link, link.client, link.upstream, True)

    def _pump(
        self, link: _Link, src: socket.socket, dst: socket.socket | None, from_client: bool
    ) -> None:
        try:
            while data := src.recv(_CHUNK):
                if dst is not None and not link.blackholed:
                    dst.sendall(data)
        except OSError:
            pass
        # Behind a black hole the server's going away must not reach the client.
        if from_client or not link.blackholed:
            link.end(abort=False)
        with link.lock:
            link.pumps -= 1
            if link.pumps:
                return
            for sock in link.sockets():
                sock.close()
        with self._changed:
            self._links.discard(link)
            self._changed.notify_all()

    def _wait_gone(self, links: list[_Link], timeout: float = 5.0) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._links.isdisjoint(links), timeout)


# -- a primary and a hot standby ------------------------------------------

_COMMON = "-c wal_level=replica -c max_wal_senders=10 -c max_connections=200"
# A commit is acknowledged once the standby has applied it: failover loses nothing.
PRIMARY_OPTIONS = f"{_COMMON} -c synchronous_standby_names='*' -c synchronous_commit=remote_apply"
# No standby of its own to wait for once promoted; and quick to reconnect to a restarted primary.
STANDBY_OPTIONS = f"{_COMMON} -c synchronous_standby_names='' -c wal_retrieve_retry_interval=250ms"
# Aurora's old writer comes back as a reader: every write fails with 25006, and
# libpq's target_session_attrs=read-write passes it by.
DEMOTED_OPTIONS = f"{_COMMON} -c synchronous_standby_names='' -c default_transaction_read_only=on"


class ReplicatedPair:
    """A primary and a synchronous hot standby in `root`/primary and `root`/standby.

    `primary` and `standby` are LocalPostgres objects (host, port, user,
    password, dsn()) and keep their names through a failover: after promote()
    the writer is `standby`. As root both run as the unprivileged OS user.
    """

    def __init__(self, root: Path, primary_port: int = 0, standby_port: int = 0) -> None:
        self.root = Path(root).resolve()
        primary_port = primary_port or free_port()
        while not standby_port or standby_port == primary_port:
            standby_port = free_port()
        self.primary = LocalPostgres(
            self.root / "primary", primary_port, extra_options=PRIMARY_OPTIONS
        )
        self.standby = LocalPostgres(
            self.root / "standby", standby_port, extra_options=STANDBY_OPTIONS
        )
        self.promoted = False
        self.demoted = False

    def start(self) -> ReplicatedPair:
        """Start the primary, clone the standby from it, and wait until it is synchronous."""
        try:
            self.primary.start()
            _check_replication_allowed(self.primary)
            self.standby.clone_from(self.primary).start()
            self.wait_for_standby()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for_standby(self, timeout: float = 30.0) -> None:
        """Block until the primary sees the standby as its synchronous standby."""
        deadline = time.monotonic() + timeout
        while not _has_sync_standby(self.primary):
            if time.monotonic() > deadline:
                raise TimeoutError(f"standby on port {self.standby.port} is not replicating")
            time.sleep(0.05)

    def promote(self) -> None:
        """Promote the standby (pg_ctl promote --wait); it then accepts writes."""
        self.standby.promote()
        self.promoted = True

    def demote_old_primary(self) -> None:
        """Restart the old primary read-only (writes fail with 25006) and waiting for no standby."""
        self.primary.extra_options = DEMOTED_OPTIONS
        self.demoted = True
        self.primary.stop()
        self.primary.start()

    def restart_primary(self, mode: str = "fast") -> None:
        """Stop the primary (pg_ctl mode: smart, fast, immediate) and start it again."""
        self.primary.stop(mode)
        self.start_primary()

    def stop_primary(self, mode: str = "fast") -> None:
        self.primary.stop(mode)

    def start_primary(self) -> None:
        """Start the primary; while the standby still follows it, wait for it to catch up.

        Until then a synchronous commit would wait, which Aurora's clients never see.
        """
        self.primary.start()
        if not (self.promoted or self.demoted) and self.standby.running():
            self.wait_for_standby()

    def stop(self) -> None:
        """Stop both servers (idempotent)."""
        try:
            self.standby.stop()
        finally:
            self.primary.stop()

    def __enter__(self) -> ReplicatedPair:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _has_sync_standby(server: LocalPostgres) -> bool:
    try:
        conn = psycopg2.connect(server.dsn(), connect_timeout=5)
    except psycopg2.OperationalError:
        return False  # starting up
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")
            row = cur.fetchone()
    finally:
        conn.close()
    return row is not None and row[0] > 0


def _check_replication_allowed(server: LocalPostgres) -> None:
    """initdb's pg_hba.conf lets replication in from 127.0.0.1 with SCRAM: check it still does."""
    wanted = ["host", "replication", "all", "127.0.0.1/32", "scram-sha-256"]
    lines = (server.datadir / "pg_hba.conf").read_text().splitlines()
    if not any(line.split() == wanted for line in lines):
        raise RuntimeError(f"{server.datadir}/pg_hba.conf has no line like: {' '.join(wanted)}")
