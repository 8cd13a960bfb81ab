"""The process-wide wait callback keeps libpq's contract for connections it did not make."""

import socket

import psycopg2
import pytest

from dataaccess import timeouts


@pytest.fixture
def silent_listener():
    """A port that accepts connections and never answers (no database involved)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def test_a_foreign_connection_still_honours_its_connect_timeout(silent_listener):
    timeouts.install()  # as any engine of ours does
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(
            host="127.0.0.1", port=silent_listener, user="u", dbname="d", connect_timeout=2
        )


def test_a_bounded_connection_gives_up_on_a_silent_server_at_its_connect_limit(silent_listener):
    timeouts.install()
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(
            host="127.0.0.1",
            port=silent_listener,
            user="u",
            dbname="d",
            connection_factory=timeouts.factory(connect_limit=1, wait_limit=0),
        )
