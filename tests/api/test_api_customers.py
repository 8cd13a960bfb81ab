from api_helpers import assert_problem


def test_create_customer_returns_201_with_location(client):
    response = client.post("/customers", json={"email": "Ada@Example.com", "name": "Ada"})
    assert response.status_code == 201
    body = response.json
    assert body["email"] == "ada@example.com"
    assert body["name"] == "Ada"
    assert response.headers["Location"] == f"/customers/{body['id']}"


def test_get_customer(client):
    created = client.post("/customers", json={"email": "g@example.com", "name": "G"}).json
    response = client.get(f"/customers/{created['id']}")
    assert response.status_code == 200
    assert response.json == created


def test_unknown_customer_is_404(client):
    body = assert_problem(client.get("/customers/999999"), 404)
    assert "999999" in body["detail"]


def test_id_beyond_bigint_is_404_not_500(client):
    assert_problem(client.get(f"/customers/{2**63}"), 404)


def test_duplicate_email_is_409(client):
    client.post("/customers", json={"email": "dup@example.com", "name": "A"})
    body = assert_problem(
        client.post("/customers", json={"email": "DUP@example.com", "name": "B"}), 409
    )
    assert body["type"].endswith("already-exists")


def test_invalid_email_is_422(client):
    body = assert_problem(client.post("/customers", json={"email": "nope", "name": "A"}), 422)
    assert body["errors"][0]["loc"] == ["email"]


def test_unknown_field_is_422(client):
    response = client.post(
        "/customers", json={"email": "u@example.com", "name": "U", "admin": True}
    )
    body = assert_problem(response, 422)
    assert body["errors"][0]["type"] == "extra_forbidden"


def test_wrong_type_is_422(client):
    assert_problem(client.post("/customers", json={"email": "w@example.com", "name": 7}), 422)
