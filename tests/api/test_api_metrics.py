"""The API's metrics: its log lines are embedded metric format documents, one per request
(Requests, Latency by status class) and one per new database connection."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from flask import Flask

from api import create_app
from api.auth import Authenticator, AuthSettings
from api.requestlog import JsonFormatter
from dataaccess import Database, Settings
from scripts.localauth import LocalIssuer
from tests.emf import check_emf, metrics_of


def lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[dict[str, Any]]:
    """The JSON lines `logger` wrote, as the container's stderr has them."""
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == logger]


def make_app(database: Database, issuer: LocalIssuer) -> Flask:
    authenticator = Authenticator(AuthSettings.from_env(issuer.env()))
    return create_app({"TESTING": True, "DATABASE": database, "AUTHENTICATOR": authenticator})


def test_each_request_line_is_an_emf_document_by_status_class(
    db: Database, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture, monkeypatch
):
    monkeypatch.setenv("METRICS_NAMESPACE", "inventory/test")
    client = make_app(db, issuer).test_client()
    caplog.set_level(logging.INFO, logger="api.request")

    client.get("/healthz")
    client.get("/products")  # no token: 401
    client.get("/no-such-path")

    requests = lines(caplog, "api.request")
    assert [(line["status"], line["StatusClass"]) for line in requests] == [
        (200, "2xx"),
        (401, "4xx"),
        (404, "4xx"),
    ]
    for line in requests:
        check_emf(line)
        (directive,) = line["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "inventory/test"
        assert directive["Dimensions"] == [["service", "StatusClass"]]
        assert line["service"] == "api"
        assert metrics_of(line) == {
            "Requests": ("Count", [1]),
            "Latency": ("Milliseconds", [line["duration_ms"]]),
        }
        # The request line's own fields are all still there.
        assert {"time", "level", "logger", "message", "request_id", "method", "path"} <= set(line)


def test_a_5xx_has_its_class_and_the_connect_that_gave_up_its_line(
    app_without_database: Flask, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="api")
    app_without_database.test_client().get("/readyz")  # no database: 503

    (line,) = lines(caplog, "api.request")
    check_emf(line)
    assert (line["status"], line["StatusClass"]) == (503, "5xx")
    (connection,) = lines(caplog, "api.database")
    check_emf(connection)
    figures = metrics_of(connection)
    assert figures["DbConnectFailures"] == ("Count", [1.0])
    assert "DbConnectTime" not in figures  # nothing was opened
    (retries,) = figures["DbConnectRetries"][1]  # refused, retried within DB_CONNECT_RETRY_BUDGET
    assert retries >= 1


def test_a_new_connection_writes_its_figures_as_one_emf_line(
    app_settings: Settings, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture, monkeypatch
):
    monkeypatch.delenv("METRICS_NAMESPACE", raising=False)
    database = Database.from_settings(app_settings)  # no connection yet
    try:
        client = make_app(database, issuer).test_client()
        caplog.set_level(logging.INFO, logger="api.database")
        client.get("/readyz")  # opens the pool's first connection
        client.get("/readyz")  # reuses it: no line
    finally:
        database.dispose()

    (line,) = lines(caplog, "api.database")
    check_emf(line)
    assert line["message"] == "database connection"
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "dataaccess"
    assert directive["Dimensions"] == [["service"]]
    assert line["service"] == "api"
    figures = metrics_of(line)
    assert set(figures) == {"DbConnectTime", "DbConnectRetries"}  # no token, no secret
    unit, (connect_ms,) = figures["DbConnectTime"]
    assert unit == "Milliseconds"
    assert connect_ms > 0
    assert figures["DbConnectRetries"] == ("Count", [0.0])
    assert (line["connects"], line["connect_failures"]) == (1, 0)
