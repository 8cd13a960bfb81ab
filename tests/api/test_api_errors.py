"""Error classes end to end: malformed input, routing, the database being away; and the logs."""

import json
import logging

import pytest
from api_helpers import assert_problem, make_customer, make_product

from api import create_app
from api.requestlog import JsonFormatter
from dataaccess import SettingsError
from scripts.devdb import local_settings
from scripts.localpg import free_port


def test_malformed_json_is_400(client):
    response = client.post("/customers", data="{not json", content_type="application/json")
    body = assert_problem(response, 400)
    assert "JSON" in body["detail"]


def test_deeply_nested_json_is_400_not_500(client):
    response = client.post("/orders", data="[" * 50_000, content_type="application/json")
    assert response.status_code in (400, 413)
    assert response.mimetype == "application/problem+json"


def test_body_that_is_not_json_is_415(client):
    assert_problem(client.post("/customers", data="email=a", content_type="text/plain"), 415)


def test_json_that_is_not_an_object_is_422(client):
    assert_problem(client.post("/customers", json=[1, 2]), 422)


def test_oversized_body_is_413(client):
    assert_problem(client.post("/customers", json={"name": "x" * 100_000}), 413)


def test_unknown_route_and_wrong_method(client):
    assert_problem(client.get("/nowhere"), 404)
    body = assert_problem(client.delete("/products"), 405)
    assert body["type"] == "about:blank"


def test_healthz_needs_no_database(issuer, monkeypatch):
    for name, value in issuer.env().items():
        monkeypatch.setenv(name, value)  # AUTH_* from the environment, as in the container
    settings = local_settings(
        host="127.0.0.1", port=free_port(), dbname="x", user="u", password="p"
    )
    app = create_app(settings=settings)
    assert app.test_client().get("/healthz").status_code == 200


def test_the_app_refuses_to_start_without_an_issuer(monkeypatch):
    for name in ("AUTH_ISSUER", "AUTH_AUDIENCE", "AUTH_JWKS_URL", "AUTH_JWKS_FILE"):
        monkeypatch.delenv(name, raising=False)
    settings = local_settings(
        host="127.0.0.1", port=free_port(), dbname="x", user="u", password="p"
    )
    with pytest.raises(SettingsError, match=r"^AUTH_ISSUER is required"):
        create_app(settings=settings)


def test_readyz_when_the_database_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ready"}


def test_database_unavailable_is_503_with_retry_after(app_without_database, issuer):
    client = app_without_database.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {issuer.token(admin=True)}"
    for response in (
        client.get("/readyz"),
        client.get("/products/ANY-1"),
        client.post("/customers", json={"email": "a@example.com", "name": "A"}),
    ):
        body = assert_problem(response, 503)
        assert response.headers["Retry-After"].isdigit()
        assert "Traceback" not in body["detail"]


def test_one_json_log_line_per_request_with_request_id(client, caplog):
    caplog.set_level(logging.INFO, logger="api.request")
    response = client.get("/healthz", headers={"X-Request-Id": "req-123"})
    assert response.headers["X-Request-Id"] == "req-123"
    (record,) = [r for r in caplog.records if r.name == "api.request"]
    assert record.fields == {
        "request_id": "req-123",
        "method": "GET",
        "path": "/healthz",
        "status": 200,
        "duration_ms": record.fields["duration_ms"],
    }


def test_a_refused_request_has_its_request_id_and_log_line_too(anonymous, caplog):
    caplog.set_level(logging.INFO, logger="api.request")
    response = anonymous.get("/products", headers={"X-Request-Id": "req-401"})
    assert_problem(response, 401)
    assert response.headers["X-Request-Id"] == "req-401"
    (record,) = [r for r in caplog.records if r.name == "api.request"]
    assert record.fields["request_id"] == "req-401"


def test_request_id_from_the_alb_trace_header_or_generated(client):
    trace = "Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8;Sampled=1"
    response = client.get("/healthz", headers={"X-Amzn-Trace-Id": trace})
    assert response.headers["X-Request-Id"] == "1-67891233-abcdef012345678912345678"
    generated = client.get("/healthz", headers={"X-Request-Id": "bad id with spaces"})
    assert len(generated.headers["X-Request-Id"]) == 32


def test_logs_never_hold_bodies_or_credentials(client, app_settings, caplog):
    caplog.set_level(logging.DEBUG)
    customer = make_customer(client)
    sku = make_product(client, stock=1)
    client.post(
        "/orders",
        json={"customer_id": customer, "lines": [{"sku": sku, "quantity": 5}]},
        headers={"Idempotency-Key": "secret-key-value"},
    )
    lines = [JsonFormatter().format(r) for r in caplog.records]
    assert [json.loads(x)["status"] for x in lines if '"api.request"' in x] == [201, 201, 409]
    text = "\n".join(lines)
    assert app_settings.password not in text
    assert "secret-key-value" not in text


def test_json_formatter_writes_one_line():
    record = logging.LogRecord("api.request", logging.INFO, __file__, 1, "GET / 200", (), None)
    record.fields = {"status": 200}
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert json.loads(line)["status"] == 200
