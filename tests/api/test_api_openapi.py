from api.schemas import CURSOR_PATTERN


def test_openapi_document_lists_every_operation(client):
    doc = client.get("/openapi.json").json
    assert doc["openapi"].startswith("3.")
    operations = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert operations == {
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/customers", "post"),
        ("/customers/{customer_id}", "get"),
        ("/products", "post"),
        ("/products", "get"),
        ("/products/{sku}", "get"),
        ("/products/{sku}", "patch"),
        ("/orders", "post"),
        ("/orders/{order_id}", "get"),
        ("/orders/{order_id}/cancel", "post"),
    }


def test_documented_models_are_the_validating_ones(client):
    doc = client.get("/openapi.json").json
    order_in = doc["components"]["schemas"]["OrderIn"]
    assert order_in["additionalProperties"] is False
    line = doc["components"]["schemas"]["OrderIn.LineIn"]
    assert line["properties"]["quantity"]["maximum"] == 10_000
    errors = doc["paths"]["/orders"]["post"]["responses"]["409"]["content"]
    assert "application/problem+json" in errors


def test_the_schema_states_the_rules_the_models_check(client):
    doc = client.get("/openapi.json").json
    patch = doc["components"]["schemas"]["ProductPatch"]
    assert [branch["required"] for branch in patch["anyOf"]] == [["name"], ["price_cents"]]
    (cursor, _null) = next(
        p["schema"]["anyOf"]
        for p in doc["paths"]["/products"]["get"]["parameters"]
        if p["name"] == "next"
    )
    assert cursor["pattern"] == CURSOR_PATTERN
    idempotency = doc["paths"]["/orders"]["post"]["responses"]["422"]["description"]
    assert "idempotency-key-reused" in idempotency


def test_only_the_liveness_probe_cannot_be_unavailable(client):
    doc = client.get("/openapi.json").json
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            unavailable = operation["responses"].get("503")
            assert (unavailable is None) == (path == "/healthz"), path
            if unavailable:
                assert "Retry-After" in unavailable["headers"], path
