"""The contract's own check, and what schemathesis reports that is the API keeping a rule.

Imported by tests/api/test_api_contract.py, and named as the hooks of
tests/api/schemathesis.toml for the CLI against a running server.

Each failure dropped is a documented business rule that JSON Schema cannot
state, matched alone (operation, failure kind and problem type); nothing else is.
"""

from __future__ import annotations

import schemathesis

IDEMPOTENCY_KEY_REUSED = "urn:problem:inventory:idempotency-key-reused"
INVALID_REQUEST = "urn:problem:inventory:invalid-request"


@schemathesis.check
def problem_status_is_the_status(ctx, response, case) -> None:
    """A problem+json body repeats the response's status (RFC 9457 `status`)."""
    headers = {name.lower(): values for name, values in response.headers.items()}
    media_type = (headers.get("content-type") or [""])[0]
    if media_type.startswith("application/problem+json"):
        status = response.json().get("status")
        assert status == response.status_code, f"{status} in the body of a {response.status_code}"


def business_rule(failure, case, response) -> str | None:
    """Why this failure is the API keeping a documented rule the schema cannot express, or None."""
    if failure.code != "ST202":  # only "schema-valid request rejected"
        return None
    problem_type = response.json().get("type") if response.status_code == 422 else None
    if (case.method, case.path) == ("POST", "/orders"):
        if problem_type == IDEMPOTENCY_KEY_REUSED:
            # Generated requests share keys ("0") with other bodies: each valid on its own,
            # the second refused by design (IETF Idempotency-Key draft; documented on the 422).
            return "an Idempotency-Key reused with another body"
        if problem_type == INVALID_REQUEST:
            # Lines with the same sku are summed (documented); a schema cannot bound a sum.
            return "a sku's quantities adding up past the line maximum"
    return None


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    """Keep every failure but the business rules above."""
    return business_rule(failure, case, response) is None
