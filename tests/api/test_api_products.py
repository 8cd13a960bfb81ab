import pytest
from api_helpers import assert_problem, make_product, new_sku


def test_create_and_get_product(client):
    response = client.post(
        "/products", json={"sku": "P-1", "name": "Pen", "price_cents": 150, "stock": 7}
    )
    assert response.status_code == 201
    assert response.headers["Location"] == "/products/P-1"
    got = client.get("/products/P-1")
    assert got.status_code == 200
    assert got.json == {"sku": "P-1", "name": "Pen", "price_cents": 150, "stock": 7}


def test_duplicate_sku_is_409(client):
    make_product(client, sku="DUP-1")
    response = client.post("/products", json={"sku": "DUP-1", "name": "X", "price_cents": 1})
    assert_problem(response, 409)


def test_negative_price_is_422(client):
    response = client.post("/products", json={"sku": "N-1", "name": "X", "price_cents": -1})
    assert_problem(response, 422)


def test_unknown_sku_is_404(client):
    assert_problem(client.get("/products/NOPE-1"), 404)


def test_impossible_sku_is_404_not_500(client):
    assert_problem(client.get("/products/a%00b"), 404)


def test_patch_name_and_price(client):
    sku = make_product(client, price_cents=100, stock=4)
    response = client.patch(f"/products/{sku}", json={"name": "Renamed", "price_cents": 120})
    assert response.status_code == 200
    assert response.json == {"sku": sku, "name": "Renamed", "price_cents": 120, "stock": 4}
    assert client.get(f"/products/{sku}").json["price_cents"] == 120


def test_patch_needs_a_field_and_no_stock(client):
    sku = make_product(client)
    assert_problem(client.patch(f"/products/{sku}", json={}), 422)
    assert_problem(client.patch(f"/products/{sku}", json={"name": None}), 422)
    assert_problem(client.patch(f"/products/{sku}", json={"stock": 1000}), 422)


def test_patch_unknown_sku_is_404(client):
    assert_problem(client.patch("/products/NOPE-2", json={"name": "x"}), 404)


def test_keyset_pagination_walks_every_product_once(client):
    skus = sorted(make_product(client, sku=f"PG-{i:02d}") for i in range(7))
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": 3, **({"next": cursor} if cursor else {})}
        page = client.get("/products", query_string=query)
        assert page.status_code == 200
        seen += [p["sku"] for p in page.json["items"]]
        cursor, pages = page.json["next"], pages + 1
        if cursor is None:
            break
    assert seen == skus
    assert pages == 3


def test_limit_is_capped(client):
    body = assert_problem(client.get("/products?limit=101"), 422)
    assert body["errors"][0]["loc"] == ["limit"]
    assert_problem(client.get("/products?limit=0"), 422)


@pytest.mark.parametrize("cursor", ["%%%", "", "5", "2d", "41ff", "41" * 65, "4A"])
def test_a_value_not_of_the_cursors_form_is_422(client, cursor):
    # Not hex; odd; a first byte that no sku starts with; a byte no sku has; too long; upper case.
    body = assert_problem(client.get("/products", query_string={"next": cursor}), 422)
    assert body["errors"][0]["loc"] == ["next"]


def test_any_cursor_of_the_documented_form_resumes_after_its_sku(client):
    for sku in ("CUR-A", "CUR-C", "CUR-E"):
        make_product(client, sku=sku)
    # The page's last sku, hex-encoded: one the API never issued is a position all the same.
    page = client.get("/products", query_string={"next": b"CUR-B".hex()})
    assert page.status_code == 200
    assert [p["sku"] for p in page.json["items"]] == ["CUR-C", "CUR-E"]


@pytest.mark.parametrize(
    ("written", "value"), [("250.0", 250), ("2.5e2", 250), ("25E1", 250), ("-0.0", 0)]
)
def test_an_integer_written_with_a_fraction_or_exponent_is_that_integer(client, written, value):
    # JSON Schema counts 250.0 as an integer, so the document's `integer` accepts it.
    body = f'{{"sku": "{new_sku()}", "name": "X", "price_cents": {written}}}'
    response = client.post("/products", data=body, content_type="application/json")
    assert response.status_code == 201, response.json
    assert response.json["price_cents"] == value


@pytest.mark.parametrize(
    "written", ["2.5", "250.0000000000000001", "1e400", '"250"', "true", "2147483648.0"]
)
def test_a_number_that_is_not_an_integer_in_range_is_422(client, written):
    # Read exactly: a float would round 250.0000000000000001 to 250.
    body = f'{{"sku": "{new_sku()}", "name": "X", "price_cents": {written}}}'
    response = client.post("/products", data=body, content_type="application/json")
    assert assert_problem(response, 422)["errors"][0]["loc"] == ["price_cents"]


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_stock_below_that_can_never_match_is_422(client, value):
    # Stock is never negative: stock_below=0 would match nothing yet read every product.
    body = assert_problem(client.get(f"/products?stock_below={value}"), 422)
    assert body["errors"][0]["loc"] == ["stock_below"]


def test_low_stock_filter(client):
    low = make_product(client, stock=2)
    make_product(client, stock=50)
    page = client.get("/products?stock_below=5")
    assert [p["sku"] for p in page.json["items"]] == [low]
