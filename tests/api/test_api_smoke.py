def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_create_product_then_get(client):
    created = client.post("/products", json={"sku": "A-1", "name": "A", "price_cents": 5})
    assert created.status_code == 201, created.json
    got = client.get("/products/A-1")
    assert got.json == {"sku": "A-1", "name": "A", "price_cents": 5, "stock": 0}
