"""Read-only units of work go to the reader endpoint, in a READ ONLY transaction."""

from dataclasses import replace

import pytest
import sqlalchemy as sa

from dataaccess import Database, services


def count_connects(engine):
    opened = []
    sa.event.listen(engine, "connect", lambda dbapi_conn, record: opened.append(dbapi_conn))
    return opened


@pytest.fixture
def routed(app_settings):
    # The same server under another name stands in for the Aurora reader endpoint.
    database = Database.from_settings(replace(app_settings, reader_host="localhost"))
    yield database
    database.dispose()


def test_read_only_work_reaches_the_reader_and_cannot_write(routed):
    assert routed.reader is not None
    assert routed.reader.url.host == "localhost"
    writer_opened, reader_opened = count_connects(routed.writer), count_connects(routed.reader)
    with routed.unit_of_work() as uow:
        services.create_product(uow, sku="R-1", name="Read me", price_cents=1, stock=1)
    assert (len(writer_opened), len(reader_opened)) == (1, 0)

    with routed.unit_of_work(read_only=True) as uow:
        assert services.get_product(uow, "R-1").name == "Read me"
        assert uow.session.scalar(sa.text("SHOW transaction_read_only")) == "on"
        with pytest.raises(sa.exc.DBAPIError) as caught:
            uow.session.execute(sa.text("UPDATE products SET stock = 0"))
        assert caught.value.orig.pgcode == "25006"  # read_only_sql_transaction
    assert (len(writer_opened), len(reader_opened)) == (1, 1)


def test_without_a_reader_read_only_work_uses_the_writer_read_only(db):
    assert db.reader is None
    with db.unit_of_work(read_only=True) as uow:
        assert uow.session.scalar(sa.text("SHOW transaction_read_only")) == "on"
    # The read-only flag must not stick to the pooled writer connection.
    with db.unit_of_work() as uow:
        assert uow.session.scalar(sa.text("SHOW transaction_read_only")) == "off"
        services.create_product(uow, sku="W-1", name="Write", price_cents=1, stock=1)
