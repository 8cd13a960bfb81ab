"""Property-based fuzzing from the OpenAPI document (schemathesis), bounded for CI.

For generated requests to every operation, valid and invalid: never a 5xx, and every error is
problem+json. Schemathesis' pytest plugin (`from_fixture`) does not run on
pytest 9 yet, so the test draws each operation's cases with hypothesis itself.
"""

import pytest
import schemathesis
from api_helpers import make_customer, make_product
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

# Per operation, valid and invalid requests drawn together: ~6 s in all here.
EXAMPLES_PER_OPERATION = 30


def check(case, headers) -> int:
    response = case.call(headers=headers)
    where = f"{case.method} {case.formatted_path}"
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
    if response.status_code >= 400:
        headers = {name.lower(): values for name, values in response.headers.items()}
        assert headers["content-type"][0].startswith("application/problem+json"), where
        body = response.json()
        assert body["status"] == response.status_code
        assert {"type", "title", "detail"} <= body.keys()
    return response.status_code


@pytest.mark.slow
def test_no_server_errors_and_errors_are_problems(app, client, issuer):
    admin = {"Authorization": f"Bearer {issuer.token(admin=True)}"}
    make_customer(client)
    for sku in ("FUZZ-1", "A", "0"):
        make_product(client, sku=sku, stock=1000)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 11
    statuses: set[int] = set()

    for operation in operations:
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )

        @given(case=cases)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case):
            statuses.add(check(case, admin) // 100)

        fuzz()
    assert statuses == {2, 4}  # both valid and refused requests were generated
