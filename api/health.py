"""Liveness (process up, no database) and readiness (database reachable)."""

from __future__ import annotations

from flask import Blueprint
from spectree import Response as Responses

from .db import get_db
from .openapi import output_only
from .schemas import Health, Problem

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@output_only(resp=Responses(HTTP_200=Health), tags=["health"])
def healthz() -> Health:
    """The process is up; the database is not consulted."""
    return Health(status="ok")


@bp.get("/readyz")
@output_only(
    resp=Responses(HTTP_200=Health, HTTP_503=(Problem, "the database does not answer")),
    tags=["health"],
)
def readyz() -> Health:
    """The database answers (writer, and reader when configured); else 503."""
    database = get_db()
    # A refused or slow connection raises OperationalError (503), bounded by
    # DB_CONNECT_TIMEOUT; statement_timeout bounds a hung query.
    database.ping()
    if database.reader is not None:
        database.ping(read_only=True)
    return Health(status="ready")
