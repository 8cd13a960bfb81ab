"""The unit of work: one connection and one transaction for the repositories and the ORM session."""

import dataclasses

import psycopg2.extensions
import pytest
import sqlalchemy as sa

from dataaccess import Database, create_engine, services, tables
from dataaccess.models import Customer

PID = sa.text("SELECT pg_backend_pid()")


def exists(db, table, column, value):
    with db.unit_of_work(read_only=True) as uow:
        query = sa.text(f"SELECT count(*) FROM {table} WHERE {column} = :value")
        return uow.connection.execute(query, {"value": value}).scalar_one() == 1


def test_repositories_and_session_commit_together(db):
    with db.unit_of_work() as uow:
        uow.products.add(sku="UOW-1", name="Core", price_cents=1, stock=1)
        uow.session.add(Customer(email="orm@example.com", name="ORM"))
        uow.session.flush()
        # One connection: the session joined the repositories' transaction.
        assert uow.session.scalar(PID) == uow.connection.execute(PID).scalar_one()
        uow.commit()
    assert exists(db, "products", "sku", "UOW-1")
    assert exists(db, "customers", "email", "orm@example.com")


def test_work_not_committed_is_rolled_back_for_both(db):
    with db.unit_of_work() as uow:
        uow.products.add(sku="UOW-2", name="Core", price_cents=1, stock=1)
        uow.session.add(Customer(email="gone@example.com", name="ORM"))
        uow.session.flush()

    def fail_before_committing():
        with db.unit_of_work() as uow:
            uow.session.add(Customer(email="gone2@example.com", name="ORM"))
            uow.products.add(sku="UOW-3", name="Core", price_cents=1, stock=1)
            raise RuntimeError("the caller failed before committing")

    with pytest.raises(RuntimeError):
        fail_before_committing()
    assert not exists(db, "products", "sku", "UOW-2")
    assert not exists(db, "products", "sku", "UOW-3")
    assert not exists(db, "customers", "email", "gone@example.com")
    assert not exists(db, "customers", "email", "gone2@example.com")


def test_rollback_discards_both_and_the_unit_of_work_goes_on(db):
    with db.unit_of_work() as uow:
        uow.session.add(Customer(email="undone@example.com", name="ORM"))
        uow.products.add(sku="UOW-4", name="Core", price_cents=1, stock=1)
        uow.rollback()
        uow.products.add(sku="UOW-5", name="Core", price_cents=1, stock=1)
        uow.commit()
    assert not exists(db, "customers", "email", "undone@example.com")
    assert not exists(db, "products", "sku", "UOW-4")
    assert exists(db, "products", "sku", "UOW-5")


def test_second_transaction_after_commit(db):
    with db.unit_of_work() as uow:
        customer = services.create_customer(uow, email="first@example.com", name="First")
        uow.session.add(Customer(email="second@example.com", name="Second"))
        uow.commit()
        services.create_product(uow, sku="UOW-6", name="After", price_cents=1, stock=1)
    assert exists(db, "customers", "email", "second@example.com")
    assert exists(db, "products", "sku", "UOW-6")
    # Records are plain frozen values, readable after the unit of work closed.
    assert customer.email == "first@example.com"
    with pytest.raises(dataclasses.FrozenInstanceError):
        customer.name = "Changed"  # type: ignore[misc]


def test_a_unit_of_work_that_runs_nothing_checks_out_no_connection(db):
    opened = []
    sa.event.listen(db.writer, "checkout", lambda *args: opened.append(args))
    with db.unit_of_work(), db.unit_of_work(read_only=True):
        pass
    assert opened == []
    with db.unit_of_work(read_only=True) as uow:
        uow.products.get_by_sku("none")
    assert len(opened) == 1


# -- autocommit reads ---------------------------------------------------------------

# now() is the transaction's start: the first statement's in autocommit, the BEGIN's
# (an earlier round trip) in a transaction.
FIRST_OF_ITS_TRANSACTION = sa.select(sa.func.now() == sa.func.statement_timestamp())


def in_transaction(uow) -> bool:
    """What libpq knows of the server's transaction state (no round trip)."""
    status = uow.connection.connection.dbapi_connection.info.transaction_status
    return status != psycopg2.extensions.TRANSACTION_STATUS_IDLE


def test_an_autocommit_read_runs_outside_any_transaction(db):
    with db.unit_of_work(read_only=True, autocommit=True) as uow:
        assert uow.execute(FIRST_OF_ITS_TRANSACTION).scalar_one() is True
        assert not in_transaction(uow)
        assert uow.execute(FIRST_OF_ITS_TRANSACTION).scalar_one() is True
    # The same read in a read-only transaction, for contrast: BEGIN READ ONLY came first.
    with db.unit_of_work(read_only=True) as uow:
        assert uow.execute(FIRST_OF_ITS_TRANSACTION).scalar_one() is False
        assert in_transaction(uow)


def test_an_autocommit_unit_of_work_refuses_anything_but_a_select(db):
    with db.unit_of_work(read_only=True, autocommit=True) as uow:
        insert = sa.insert(tables.products).values(sku="AC-X", name="x", price_cents=1, stock=1)
        with pytest.raises(ValueError, match="SELECTs only, not Insert"):
            uow.execute(insert)
        with pytest.raises(ValueError, match="SELECTs only, not TextClause"):
            uow.execute(sa.text("DELETE FROM products"))
        with pytest.raises(ValueError, match="SELECTs only"):
            uow.products.add(sku="AC-X", name="x", price_cents=1, stock=1)
        assert uow.products.get_by_sku("AC-X") is None  # still usable for its reads
    assert not exists(db, "products", "sku", "AC-X")


def test_autocommit_is_for_reads_only(db):
    with pytest.raises(ValueError, match="a write needs its transaction"):
        db.unit_of_work(autocommit=True)


def test_the_autocommit_flag_never_reaches_the_next_unit_of_work(app_settings):
    # One pooled connection, so the write below gets the autocommit read's connection.
    database = Database(create_engine(app_settings, pool_size=1, max_overflow=0))
    try:
        with database.unit_of_work(read_only=True, autocommit=True) as uow:
            reader_pid = uow.execute(sa.select(sa.func.pg_backend_pid())).scalar_one()
        with database.unit_of_work() as uow:
            uow.products.add(sku="AC-LEAK", name="x", price_cents=1, stock=1)
            assert uow.execute(PID).scalar_one() == reader_pid
            assert in_transaction(uow)
            # Leaves without committing: the insert must be rolled back.
        with database.unit_of_work(read_only=True) as uow:
            assert uow.execute(PID).scalar_one() == reader_pid
            assert uow.products.get_by_sku("AC-LEAK") is None
            with pytest.raises(sa.exc.InternalError, match="read-only transaction"):
                uow.products.add(sku="AC-LEAK", name="x", price_cents=1, stock=1)
    finally:
        database.dispose()
