"""The drill tools themselves, against real servers: the forwarder's faults, the pair's failover."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import pytest
from psycopg2.extensions import connection as Connection

from drills.faults import ReplicatedPair, TcpForwarder
from scripts.localpg import LocalPostgres, free_port, usable_root

REPO = Path(__file__).resolve().parents[2]
READ_ONLY_SQL_TRANSACTION = "25006"
# The first message of a libpq session: the server answers it with one byte, S or N.
SSL_REQUEST = struct.pack("!ii", 8, 80877103)

Connect = Callable[..., Connection]


def make_pair(name: str) -> Iterator[ReplicatedPair]:
    root = usable_root(REPO / ".localpg" / f"drills-{os.getpid()}-{name}")
    pair = ReplicatedPair(root)
    try:
        yield pair.start()
    finally:
        pair.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pair() -> Iterator[ReplicatedPair]:
    """A primary and its synchronous standby, shared by the module's non-destructive tests."""
    yield from make_pair("pair")


@pytest.fixture
def connect() -> Iterator[Connect]:
    """connect(server, port=..., **libpq_options): an autocommit connection, closed after."""
    opened: list[Connection] = []

    def _connect(server: LocalPostgres, port: int | None = None, **options: object) -> Connection:
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=port or server.port,
            user=server.user,
            password=server.password,
            dbname="postgres",
            **options,
        )
        conn.autocommit = True
        opened.append(conn)
        return conn

    try:
        yield _connect
    finally:
        for conn in opened:
            conn.close()


@pytest.fixture(autouse=True)
def blocking_psycopg2() -> Iterator[None]:
    """These tests drive plain, blocking psycopg2 (closing a hung connection from another
    thread, as a crashed client would); dataaccess may have put the process in green mode."""
    callback = psycopg2.extensions.get_wait_callback()
    psycopg2.extensions.set_wait_callback(None)
    try:
        yield
    finally:
        psycopg2.extensions.set_wait_callback(callback)


@pytest.fixture
def forwarder(pair: ReplicatedPair) -> Iterator[TcpForwarder]:
    fwd = TcpForwarder(pair.primary.port)
    try:
        yield fwd
    finally:
        fwd.close()


def scalar(conn: Connection, sql: str, params: tuple[object, ...] = ()) -> object:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
    assert row is not None
    return row[0]


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Query(threading.Thread):
    """Run one statement in the background; `error` is what it raised, if anything."""

    def __init__(self, conn: Connection, sql: str) -> None:
        super().__init__(daemon=True)
        self.conn, self.sql = conn, sql
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.conn.cursor() as cur:
                cur.execute(self.sql)
        except BaseException as exc:
            self.error = exc


def raw_session(port: int) -> socket.socket:
    """A raw TCP connection that has had one answer from PostgreSQL: bytes flow both ways."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(SSL_REQUEST)
    assert sock.recv(1) in (b"S", b"N")
    return sock


# -- TcpForwarder ----------------------------------------------------------


def test_forwards_to_its_target_and_counts_connections(forwarder, pair, connect):
    conn = connect(pair.primary, port=forwarder.port)
    assert scalar(conn, "SELECT inet_server_port()") == pair.primary.port
    assert forwarder.active() == 1
    conn.close()
    assert eventually(lambda: forwarder.active() == 0)


def test_point_to_moves_new_connections_and_leaves_old_ones(forwarder, pair, connect):
    before = connect(pair.primary, port=forwarder.port)
    forwarder.point_to(pair.standby.port)
    after = connect(pair.standby, port=forwarder.port)
    assert scalar(after, "SHOW port") == str(pair.standby.port)
    assert scalar(before, "SHOW port") == str(pair.primary.port)
    assert forwarder.active() == 2


def test_drop_all_fails_a_running_query_promptly_and_new_connections_still_work(
    forwarder, pair, connect
):
    running = Query(connect(pair.primary, port=forwarder.port), "SELECT pg_sleep(10)")
    running.start()
    time.sleep(0.2)  # the query is on the server
    started = time.monotonic()
    forwarder.drop_all()
    running.join(timeout=5)
    assert not running.is_alive()
    assert time.monotonic() - started < 2
    assert isinstance(running.error, psycopg2.OperationalError)
    assert forwarder.active() == 0
    assert scalar(connect(pair.primary, port=forwarder.port), "SELECT 1") == 1


def test_drop_all_resets_rather_than_closes(forwarder):
    sock = raw_session(forwarder.port)
    with sock:
        forwarder.drop_all()
        with pytest.raises(ConnectionResetError):
            sock.recv(1)


def test_nothing_listening_behind_it_resets_the_client(forwarder):
    forwarder.point_to(free_port())
    # So prompt that connect() itself may already report it (the RST beat the poll).
    with (
        pytest.raises(ConnectionResetError),
        socket.create_connection(("127.0.0.1", forwarder.port), timeout=5) as sock,
    ):
        sock.recv(1)
    assert eventually(lambda: forwarder.active() == 0)


def test_blackhole_hangs_queries_and_new_connections(forwarder, pair, connect):
    table = f"drill_{secrets.token_hex(4)}"
    scalar(connect(pair.primary), f"CREATE TABLE {table} (n int); SELECT 1")
    victim = connect(pair.primary, port=forwarder.port)
    forwarder.blackhole(True)
    hanging = Query(victim, f"INSERT INTO {table} VALUES (1)")
    hanging.start()
    hanging.join(timeout=1)
    assert hanging.is_alive(), "the query should hang behind the black hole"

    started = time.monotonic()
    with pytest.raises(psycopg2.OperationalError, match="timeout expired"):
        connect(pair.primary, port=forwarder.port, connect_timeout=2)
    assert time.monotonic() - started >= 1.5
    assert hanging.is_alive()

    forwarder.drop_all()  # how a drill gets its stuck client back
    hanging.join(timeout=5)
    assert isinstance(hanging.error, psycopg2.OperationalError)
    # The INSERT never reached the server.
    assert scalar(connect(pair.primary), f"SELECT count(*) FROM {table}") == 0


def test_blackholed_connection_stays_silent_until_its_client_leaves(forwarder, pair, connect):
    sock = raw_session(forwarder.port)
    with sock:
        forwarder.blackhole(True)
        # Garbage where a TLS handshake or startup packet belongs makes the server hang
        # up; behind the black hole the client hears nothing of it: no EOF, no reset.
        sock.sendall(b"\x00\x00\x00\x08garbage!" * 4)
        sock.settimeout(1)
        with pytest.raises(TimeoutError):
            sock.recv(1)

        forwarder.blackhole(False)
        conn = connect(pair.primary, port=forwarder.port)
        assert scalar(conn, "SELECT inet_server_port()") == pair.primary.port
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        assert forwarder.active() == 2
    # The client gave up: the forwarder lets go of its side too.
    assert eventually(lambda: forwarder.active() == 1)


def test_close_stops_listening_resets_everything_and_leaves_no_threads(pair, connect):
    fwd = TcpForwarder(pair.primary.port)
    conn = connect(pair.primary, port=fwd.port)
    assert scalar(conn, "SELECT 1") == 1
    fwd.blackhole(True)
    with socket.create_connection(("127.0.0.1", fwd.port), timeout=5):
        assert eventually(lambda: fwd.active() == 2)
        fwd.close()
        fwd.close()  # idempotent
    assert fwd.active() == 0
    with pytest.raises(psycopg2.OperationalError):
        scalar(conn, "SELECT 1")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", fwd.port), timeout=5).close()
    name = f"fwd-{fwd.port}"
    assert eventually(lambda: not [t for t in threading.enumerate() if t.name.startswith(name)])


# -- ReplicatedPair --------------------------------------------------------


def test_primary_commits_only_once_the_standby_has_applied(pair, connect):
    primary, standby = connect(pair.primary), connect(pair.standby)
    assert scalar(primary, "SHOW synchronous_commit") == "remote_apply"
    assert scalar(primary, "SELECT sync_state FROM pg_stat_replication") == "sync"
    table = f"drill_{secrets.token_hex(4)}"
    scalar(primary, f"CREATE TABLE {table} (n int); SELECT 1")
    for n in range(20):
        scalar(primary, f"INSERT INTO {table} VALUES (%s); SELECT 1", (n,))
        assert scalar(standby, f"SELECT max(n) FROM {table}") == n


def test_standby_is_a_read_only_hot_standby(pair, connect):
    standby = connect(pair.standby)
    assert scalar(standby, "SELECT pg_is_in_recovery()") is True
    with pytest.raises(psycopg2.Error) as refused:
        scalar(standby, "CREATE TABLE nope (n int); SELECT 1")
    assert refused.value.pgcode == READ_ONLY_SQL_TRANSACTION


def test_stop_and_start_primary(pair, connect):
    old = connect(pair.primary)
    pair.stop_primary()
    with pytest.raises(psycopg2.OperationalError, match="Connection refused"):
        connect(pair.primary)
    with pytest.raises(psycopg2.OperationalError):
        scalar(old, "SELECT 1")
    pair.start_primary()  # and the standby follows again, synchronously
    assert scalar(connect(pair.primary), "SELECT sync_state FROM pg_stat_replication") == "sync"


def test_restart_primary_ends_sessions_and_replication_resumes(pair, connect):
    old = connect(pair.primary)
    pid = scalar(old, "SELECT pg_backend_pid()")
    pair.restart_primary()
    with pytest.raises(psycopg2.OperationalError):
        scalar(old, "SELECT 1")
    primary = connect(pair.primary)
    assert scalar(primary, "SELECT pg_backend_pid()") != pid
    table = f"drill_{secrets.token_hex(4)}"
    scalar(primary, f"CREATE TABLE {table} AS SELECT 7 AS n; SELECT 1")
    assert scalar(connect(pair.standby), f"SELECT n FROM {table}") == 7


# -- failover: promote the standby, bring the old primary back read-only -----


@pytest.fixture(scope="module")
def failed_over() -> Iterator[ReplicatedPair]:
    """A pair after a failover; the table `before` was committed on the old primary."""
    for pair in make_pair("failover"):
        with psycopg2.connect(pair.primary.dsn()) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE before AS SELECT 42 AS n")
        conn.close()
        pair.stop_primary()  # the writer dies ...
        pair.promote()  # ... the reader takes over ...
        pair.demote_old_primary()  # ... and the old writer comes back as a reader
        yield pair


def test_promoted_standby_has_every_commit_and_takes_writes(failed_over, connect):
    writer = connect(failed_over.standby)
    assert scalar(writer, "SELECT pg_is_in_recovery()") is False
    assert scalar(writer, "SELECT n FROM before") == 42
    scalar(writer, "CREATE TABLE after AS SELECT 1 AS n; SELECT 1")  # does not wait for anyone
    assert scalar(writer, "SELECT count(*) FROM after") == 1


def test_demoted_old_primary_refuses_writes(failed_over, connect):
    old = connect(failed_over.primary)
    assert scalar(old, "SELECT n FROM before") == 42
    with pytest.raises(psycopg2.Error) as refused:
        scalar(old, "INSERT INTO before VALUES (1); SELECT 1")
    assert refused.value.pgcode == READ_ONLY_SQL_TRANSACTION


def test_read_write_session_attrs_pass_the_demoted_primary_by(failed_over, connect):
    old, new = failed_over.primary, failed_over.standby
    with pytest.raises(psycopg2.OperationalError, match="session is read-only"):
        connect(old, target_session_attrs="read-write")
    # Both instances in one connection string, old writer first: libpq finds the new one.
    conn = psycopg2.connect(
        host="127.0.0.1,127.0.0.1",
        port=f"{old.port},{new.port}",
        user=old.user,
        password=old.password,
        dbname="postgres",
        target_session_attrs="read-write",
    )
    try:
        assert scalar(conn, "SELECT inet_server_port()") == new.port
    finally:
        conn.close()
