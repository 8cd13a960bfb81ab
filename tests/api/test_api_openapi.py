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
