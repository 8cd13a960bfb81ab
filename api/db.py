"""One unit of work per request: opened lazily on first use, closed in teardown."""

from __future__ import annotations

from flask import Flask, current_app, g, request

from dataaccess import Database, UnitOfWork

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_db() -> Database:
    """The process's Database, built once by create_app."""
    database: Database = current_app.extensions["database"]
    return database


def get_uow() -> UnitOfWork:
    """This request's unit of work; a read (GET) gets the read-only path to the reader.

    Every GET view runs one SELECT, so a GET's unit of work is autocommit: one
    round trip, no BEGIN and ROLLBACK around it. A view that needs several
    statements to see one snapshot opens its own `get_db().unit_of_work(read_only=True)`.
    """
    if "uow" not in g:
        reading = request.method in _READ_METHODS
        uow = get_db().unit_of_work(read_only=reading, autocommit=reading)
        g.uow = uow.__enter__()
    uow_: UnitOfWork = g.uow
    return uow_


def close_uow(exc: BaseException | None = None) -> None:
    """Roll back whatever the request did not commit and return the connection to the pool."""
    uow: UnitOfWork | None = g.pop("uow", None)
    if uow is not None:
        uow.__exit__(None, None, None)


def init_app(app: Flask, database: Database) -> None:
    app.extensions["database"] = database
    app.teardown_appcontext(close_uow)
