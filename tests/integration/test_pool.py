"""Pre-ping on checkout for connections that sat idle; a dead one is replaced, not handed out."""

from dataclasses import replace

import pytest
import sqlalchemy as sa

import dataaccess.engine
from dataaccess import Database


def backend_pid(db):
    with db.writer.connect() as conn:
        return conn.scalar(sa.text("SELECT pg_backend_pid()"))


def kill(admin, pid):
    admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))


@pytest.fixture
def pool_db(app_settings):
    database = Database.from_settings(replace(app_settings, pool_size=1, max_overflow=0))
    yield database
    database.dispose()


def test_idle_connection_is_pinged_and_a_dead_one_replaced(pool_db, admin, monkeypatch):
    first = backend_pid(pool_db)
    kill(admin, first)
    later = dataaccess.engine.time.monotonic() + 60
    monkeypatch.setattr(dataaccess.engine.time, "monotonic", lambda: later)
    # The checkout pings, finds the server gone, and the pool opens a new connection.
    second = backend_pid(pool_db)
    assert second != first


def test_recently_used_connection_skips_the_ping_and_the_pool_heals_after_one_error(
    app_settings, admin
):
    # An hour's idle threshold: however slow this machine, the checkout is "recent".
    db = Database.from_settings(
        replace(app_settings, pool_size=1, max_overflow=0, pool_pre_ping_idle=3600)
    )
    first = backend_pid(db)
    kill(admin, first)
    # Used moments ago, so not pinged: the statement finds the dead server ...
    with pytest.raises(sa.exc.OperationalError) as caught:
        backend_pid(db)
    assert caught.value.connection_invalidated
    # ... and SQLAlchemy has invalidated the pool, so the next checkout reconnects.
    assert backend_pid(db) != first
    db.dispose()


def test_ping_on_every_checkout_when_idle_is_zero(app_settings, admin):
    db = Database.from_settings(
        replace(app_settings, pool_size=1, max_overflow=0, pool_pre_ping_idle=0)
    )
    first = backend_pid(db)
    kill(admin, first)
    assert backend_pid(db) != first
    db.dispose()
