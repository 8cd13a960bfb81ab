"""Many buyers, one hot SKU, through HTTP against gunicorn: stock never oversold."""

import json
import secrets
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

BUYERS = 24
INITIAL_STOCK = 40


TOKEN: dict[str, str] = {}


def call(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    """Status and JSON body, as the admin; an error must come as problem+json."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN['admin']}"}
    request = urllib.request.Request(  # noqa: S310 (loopback test server)
        url, data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        media_type = error.headers["Content-Type"]
        code, body = error.code, json.loads(error.read())
    assert media_type.startswith("application/problem+json"), (code, body)
    return code, body


@pytest.mark.slow
def test_parallel_orders_on_a_hot_sku(live_server, issuer):
    TOKEN["admin"] = issuer.token(admin=True)
    email = f"hot-{secrets.token_hex(3)}@example.com"
    status, customer = call("POST", f"{live_server}/customers", {"email": email, "name": "H"})
    assert status == 201
    product = {"sku": "HOT-1", "name": "Hot", "price_cents": 10, "stock": INITIAL_STOCK}
    assert call("POST", f"{live_server}/products", product)[0] == 201

    def buy(i: int) -> tuple[int, int, dict]:
        quantity = 1 + i % 4
        body = {"customer_id": customer["id"], "lines": [{"sku": "HOT-1", "quantity": quantity}]}
        status, answer = call("POST", f"{live_server}/orders", body)
        return status, quantity, answer

    with ThreadPoolExecutor(max_workers=BUYERS) as pool:
        results = list(pool.map(buy, range(BUYERS * 2)))

    placed = [q for status, q, _ in results if status == 201]
    refused = [answer for status, _, answer in results if status != 201]
    assert all(answer["status"] == 409 and answer["sku"] == "HOT-1" for answer in refused)
    assert placed, "some orders must get through"
    assert refused, "the demand exceeds the stock: some must be refused"
    _, final = call("GET", f"{live_server}/products/HOT-1")
    assert final["stock"] == INITIAL_STOCK - sum(placed)
    assert final["stock"] >= 0
