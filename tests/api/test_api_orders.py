from api_helpers import assert_problem, make_customer, make_product


def order(client, customer_id, lines, key=None):
    headers = {"Idempotency-Key": key} if key else {}
    body = {
        "customer_id": customer_id,
        "lines": [{"sku": s, "quantity": q} for s, q in lines],
    }
    return client.post("/orders", json=body, headers=headers)


def stock(client, sku):
    return client.get(f"/products/{sku}").json["stock"]


def test_place_order_reserves_stock(client):
    customer = make_customer(client)
    sku = make_product(client, stock=5, price_cents=200)
    response = order(client, customer, [(sku, 2)])
    assert response.status_code == 201
    body = response.json
    assert body["status"] == "placed"
    assert body["total_cents"] == 400
    assert body["lines"] == [{"sku": sku, "quantity": 2, "unit_price_cents": 200}]
    assert response.headers["Location"] == f"/orders/{body['id']}"
    assert stock(client, sku) == 3


def test_get_order(client):
    customer = make_customer(client)
    sku = make_product(client)
    placed = order(client, customer, [(sku, 1)]).json
    response = client.get(f"/orders/{placed['id']}")
    assert response.status_code == 200
    assert response.json == placed


def test_unknown_order_is_404(client):
    assert_problem(client.get("/orders/424242"), 404)
    assert_problem(client.post("/orders/424242/cancel"), 404)


def test_cancel_returns_stock_once(client):
    customer = make_customer(client)
    sku = make_product(client, stock=5)
    placed = order(client, customer, [(sku, 3)]).json
    first = client.post(f"/orders/{placed['id']}/cancel")
    assert first.status_code == 200
    assert first.json["status"] == "cancelled"
    assert client.post(f"/orders/{placed['id']}/cancel").status_code == 200
    assert stock(client, sku) == 5


def test_insufficient_stock_is_409_naming_the_sku(client):
    customer = make_customer(client)
    plenty, short = make_product(client, stock=10), make_product(client, stock=1)
    body = assert_problem(order(client, customer, [(plenty, 1), (short, 2)]), 409)
    assert body["sku"] == short
    assert short in body["detail"]
    assert stock(client, plenty) == 10  # all or nothing


def test_unknown_sku_or_customer_is_404(client):
    customer = make_customer(client)
    sku = make_product(client)
    assert_problem(order(client, customer, [("NOPE-9", 1)]), 404)
    assert_problem(order(client, 987654, [(sku, 1)]), 404)


def test_negative_zero_and_huge_quantities_are_422(client):
    customer = make_customer(client)
    sku = make_product(client)
    for quantity in (-1, 0, 10**6, 10**30):
        assert_problem(order(client, customer, [(sku, quantity)]), 422)
    assert_problem(order(client, customer, []), 422)


def test_quantity_as_string_or_float_is_422(client):
    customer = make_customer(client)
    sku = make_product(client)
    for quantity in ("2", 2.5, True, None):
        response = client.post(
            "/orders", json={"customer_id": customer, "lines": [{"sku": sku, "quantity": quantity}]}
        )
        assert_problem(response, 422)


def test_same_idempotency_key_returns_same_order_and_status(client):
    customer = make_customer(client)
    sku = make_product(client, stock=10)
    first = order(client, customer, [(sku, 2)], key="key-1")
    again = order(client, customer, [(sku, 2)], key="key-1")
    assert first.status_code == again.status_code == 201
    assert again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"
    assert stock(client, sku) == 8


def test_idempotency_key_with_different_body_is_422(client):
    customer = make_customer(client)
    sku = make_product(client, stock=10)
    order(client, customer, [(sku, 2)], key="key-2")
    body = assert_problem(order(client, customer, [(sku, 3)], key="key-2"), 422)
    assert body["type"].endswith("idempotency-key-reused")
    assert stock(client, sku) == 8


def test_big_integers_written_with_a_fraction_stay_exact(client):
    sku = make_product(client)
    # 2**53 + 1 read as a float would be 2**53: another customer, silently.
    body = f'{{"customer_id": 9007199254740993.0, "lines": [{{"sku": "{sku}", "quantity": 1.0}}]}}'
    response = client.post("/orders", data=body, content_type="application/json")
    assert assert_problem(response, 404)["detail"] == "no customer with id 9007199254740993"
