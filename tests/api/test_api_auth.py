"""Bearer tokens: who may call what. Every token here is signed for real, by a local issuer
or by a key the API does not trust; nothing about the verification is mocked."""

from __future__ import annotations

import pytest
from api_helpers import make_customer, make_product

from api.auth import (
    VERIFIED_TOKEN_SECONDS,
    Authenticator,
    AuthSettings,
    ForbiddenError,
    UnauthenticatedError,
)
from dataaccess import SettingsError
from scripts.localauth import LocalIssuer


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status
    return body


@pytest.fixture
def seeded(client):
    """A product and two customers, made by the admin; their ids."""
    make_product(client, sku="AUTH-1", stock=100)
    return make_customer(client), make_customer(client)


def order_body(customer_id: int) -> dict:
    return {"customer_id": customer_id, "lines": [{"sku": "AUTH-1", "quantity": 1}]}


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json"])
def test_probes_and_the_description_are_anonymous(anonymous, path):
    assert anonymous.get(path).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/products"), ("GET", "/products/AUTH-1"), ("GET", "/customers/1"),
     ("POST", "/orders"), ("GET", "/orders/1"), ("POST", "/orders/1/cancel"),
     ("POST", "/products"), ("PATCH", "/products/AUTH-1"), ("POST", "/customers")],
)  # fmt: skip
def test_everything_else_needs_a_token(anonymous, method, path):
    response = anonymous.open(path, method=method, json={})
    body = assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="inventory"'
    assert "token" in body["detail"]


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"exp": 1_000_000_000}, "expired"),
        ({"aud": "another-api"}, "not for this API"),
        ({"iss": "https://issuer.example"}, "another issuer"),
        ({"sub": None}, "malformed"),
    ],
)
def test_a_bad_token_is_401_with_the_reason(anonymous, issuer, claims, detail):
    # An empty subject is no subject.
    token = issuer.token(admin=True, **{k: ("" if v is None else v) for k, v in claims.items()})
    response = anonymous.get("/products", headers=bearer(token))
    body = assert_problem(response, 401)
    assert detail in body["detail"]
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert token not in response.get_data(as_text=True)


def test_a_token_signed_by_another_key_is_refused(anonymous, issuer, tmp_path):
    forger = LocalIssuer(tmp_path / "forger")
    forged = forger.token(admin=True)
    # Same claims, another key; once with its own key id, once claiming the real one.
    assert_problem(anonymous.get("/products", headers=bearer(forged)), 401)
    forger.key_id = issuer.key_id
    body = assert_problem(anonymous.get("/products", headers=bearer(forger.token(admin=True))), 401)
    assert "signature" in body["detail"]


@pytest.mark.parametrize("header", ["Bearer", "Basic dXNlcjpwYXNz", "Bearer not.a.jwt", "token"])
def test_a_malformed_authorization_header_is_401(anonymous, header):
    assert_problem(anonymous.get("/products", headers={"Authorization": header}), 401)


def test_a_token_with_neither_scope_nor_customer_is_403(anonymous, issuer):
    token = issuer.token(scope="openid profile")
    assert_problem(anonymous.get("/products", headers=bearer(token)), 403)


def test_the_catalog_needs_the_admin_scope(anonymous, issuer, seeded):
    ours, _ = seeded
    customer = bearer(issuer.token(customer_id=ours))
    assert anonymous.get("/products/AUTH-1", headers=customer).status_code == 200
    new = {"sku": "AUTH-2", "name": "x", "price_cents": 1, "stock": 1}
    assert_problem(anonymous.post("/products", json=new, headers=customer), 403)
    patch = anonymous.patch("/products/AUTH-1", json={"price_cents": 0}, headers=customer)
    assert_problem(patch, 403)
    body = {"email": "new@example.com", "name": "N"}
    assert_problem(anonymous.post("/customers", json=body, headers=customer), 403)


def test_a_customer_token_acts_for_its_own_customer_only(anonymous, issuer, seeded):
    ours, theirs = seeded
    mine, other = bearer(issuer.token(customer_id=ours)), bearer(issuer.token(customer_id=theirs))
    assert anonymous.get(f"/customers/{ours}", headers=mine).status_code == 200
    assert_problem(anonymous.get(f"/customers/{theirs}", headers=mine), 403)
    # Placing for another customer is refused before any stock moves.
    assert_problem(anonymous.post("/orders", json=order_body(theirs), headers=mine), 403)
    placed = anonymous.post("/orders", json=order_body(ours), headers=mine)
    assert placed.status_code == 201
    order_id = placed.get_json()["id"]
    assert anonymous.get(f"/orders/{order_id}", headers=mine).status_code == 200
    assert_problem(anonymous.get(f"/orders/{order_id}", headers=other), 403)
    assert_problem(anonymous.post(f"/orders/{order_id}/cancel", headers=other), 403)
    assert anonymous.get(f"/orders/{order_id}", headers=mine).get_json()["status"] == "placed"
    assert anonymous.post(f"/orders/{order_id}/cancel", headers=mine).status_code == 200


def test_the_admin_acts_for_any_customer(client, seeded):
    ours, theirs = seeded
    for customer_id in (ours, theirs):
        assert client.post("/orders", json=order_body(customer_id)).status_code == 201
        assert client.get(f"/customers/{customer_id}").status_code == 200


def test_the_document_declares_bearer_auth_and_its_answers(anonymous):
    document = anonymous.get("/openapi.json").get_json()
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert document["security"] == [{"bearerAuth": []}]
    for path, operations in document["paths"].items():
        for operation in operations.values():
            if path in ("/healthz", "/readyz"):
                assert operation["security"] == []
            else:
                assert {"401", "403"} <= operation["responses"].keys(), path


def test_cognito_style_tokens_name_their_client_and_several_clients_may_be_trusted(issuer):
    settings = AuthSettings.from_env({**issuer.env(), "AUTH_AUDIENCE": "admin-client, shop-client"})
    authenticator = Authenticator(settings)
    # Cognito access tokens have no aud: the app client is in client_id.
    for client_id in ("admin-client", "shop-client"):
        token = issuer.token(admin=True, aud=None, client_id=client_id)
        assert authenticator.authenticate(f"Bearer {token}").admin
    with pytest.raises(UnauthenticatedError, match="not for this API"):
        authenticator.authenticate(f"Bearer {issuer.token(admin=True, aud=None, client_id='x')}")


@pytest.mark.parametrize(
    ("override", "variable"),
    [
        ({"AUTH_ISSUER": ""}, "AUTH_ISSUER"),
        ({"AUTH_AUDIENCE": " , "}, "AUTH_AUDIENCE"),
        ({"AUTH_JWKS_FILE": ""}, "AUTH_JWKS_URL"),
        ({"AUTH_JWKS_URL": "http://issuer.example/jwks"}, "AUTH_JWKS_URL"),
        ({"AUTH_JWKS_FILE": "/no/such/jwks.json"}, "AUTH_JWKS_FILE"),
        ({"AUTH_LEEWAY_SECONDS": "3600"}, "AUTH_LEEWAY_SECONDS"),
    ],
)
def test_each_bad_auth_variable_is_named(issuer, override, variable):
    env = {**issuer.env(), **override}
    if "AUTH_JWKS_URL" in override:
        env.pop("AUTH_JWKS_FILE")
    with pytest.raises(SettingsError) as caught:
        AuthSettings.from_env(env)
    assert str(caught.value).startswith(variable)


class Counted:
    """An Authenticator whose clock the test moves, counting the tokens it verifies."""

    def __init__(self, issuer: LocalIssuer, monkeypatch, **env: str) -> None:
        self.now = 1000.0
        settings = AuthSettings.from_env({**issuer.env(), **env})
        self.authenticator = Authenticator(settings, clock=lambda: self.now, verified_tokens=3)
        self.verified = 0
        real = self.authenticator._verify

        def counting(token: str) -> dict:
            self.verified += 1
            return real(token)

        monkeypatch.setattr(self.authenticator, "_verify", counting)

    def __call__(self, token: str):
        return self.authenticator.authenticate(f"Bearer {token}")


def test_a_verified_token_is_checked_again_only_after_a_minute(issuer, monkeypatch):
    counted = Counted(issuer, monkeypatch)
    token = issuer.token(customer_id=7)
    assert counted(token).customer_id == 7
    counted.now += VERIFIED_TOKEN_SECONDS - 1
    assert counted(token).customer_id == 7
    assert counted.verified == 1
    counted.now += 1
    assert counted(token).customer_id == 7
    assert counted.verified == 2


def test_a_remembered_token_is_never_trusted_past_its_expiry(issuer, monkeypatch):
    counted = Counted(issuer, monkeypatch, AUTH_LEEWAY_SECONDS="0")
    token = issuer.token(admin=True, lifetime=5)  # expires in 4 to 5 s
    counted(token)
    counted.now += 3.9
    counted(token)
    assert counted.verified == 1
    counted.now += 1.2  # past exp on this clock: the token is verified again
    counted(token)
    assert counted.verified == 2


def test_refused_tokens_are_not_remembered(issuer, monkeypatch):
    counted = Counted(issuer, monkeypatch)
    neither = issuer.token(scope="inventory/other")  # valid, but grants nothing
    for _ in range(2):
        with pytest.raises(ForbiddenError):
            counted(neither)
    assert counted.verified == 2


def test_the_remembered_tokens_are_bounded_and_the_oldest_goes_first(issuer, monkeypatch):
    counted = Counted(issuer, monkeypatch)  # at most 3
    tokens = [issuer.token(customer_id=n) for n in range(1, 6)]
    for token in tokens:
        counted(token)
    assert len(counted.authenticator._verified) == 3
    for token in tokens[2:]:  # the newest three
        counted(token)
    assert counted.verified == 5
    counted(tokens[0])
    assert counted.verified == 6
