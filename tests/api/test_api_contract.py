"""The OpenAPI document says exactly what the API does: schemathesis, every check, every phase.

In-process, what this does against `make run` (docs/api.md, "The contract"):

    st --config-file tests/api/schemathesis.toml run http://127.0.0.1:8000/openapi.json \
        -H "Authorization: Bearer $TOKEN"

on this test's fresh database, with an admin token from the test issuer and a
fixed seed, so that a run is reproducible and a change that makes the document
and the API disagree fails here. The failures that are the API keeping a
business rule JSON Schema cannot state are dropped, each alone and with its
reason, by the hook in contract_rules.py, which also adds the one check
schemathesis lacks.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import contract_rules  # noqa: F401 (registers its check and its failure filter)
import pytest
import schemathesis
from api_helpers import make_customer, make_product
from schemathesis.checks import not_a_server_error
from schemathesis.engine import events, from_schema
from schemathesis.transport.wsgi import WSGITransport

# What the CLI reads too: every check and phase, what counts as a refusal, the hooks.
CONFIG = Path(__file__).with_name("schemathesis.toml")
PHASES = ("examples", "coverage", "fuzzing", "stateful")
# Per operation and phase: ~1,350 requests, 15 s on an idle 2-core machine.
MAX_EXAMPLES = 100
SEED = 20151
# For generated requests to find: the documents' examples name WIDGET-1 and
# customer 1, and hypothesis tries its smallest strings ("0", "A") first.
SEEDED_SKUS = ("0", "A", "FUZZ-1", "WIDGET-1")

# Hypothesis' note that it printed a large generated body (an error under filterwarnings).
LARGE_REPR_IS_NOT_A_FINDING = (
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"
)


@pytest.fixture
def in_process_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let ignored_auth's unauthenticated probe reach a WSGI app (schemathesis 4.32).

    The probe drops the run's requests session but keeps its socket options
    (max_redirects, verify, cert), which werkzeug's test client refuses; the WSGI
    transport discards them itself whenever a session comes along.
    """
    send = WSGITransport.send

    def without_socket_options(self, case, *, session=None, **kwargs):
        for name in ("max_redirects", "verify", "cert", "proxies"):
            kwargs.pop(name, None)
        return send(self, case, session=session, **kwargs)

    monkeypatch.setattr(WSGITransport, "send", without_socket_options)


def run(schema) -> tuple[list[str], list[str], dict[str, str], int]:
    """Run every phase; the failures and errors it found, each phase's status, the cases sent."""
    failures, errors, phases, cases = [], [], {}, 0
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            cases += len(event.recorder.cases)
            failures += [
                f"{event.recorder.label} ({event.phase.value}): {info.failure.title}\n"
                f"{info.failure.message}\n{info.code_sample}"
                for nodes in event.recorder.checks.values()
                for info in (node.failure_info for node in nodes)
                if info is not None
            ]
        elif isinstance(event, events.NonFatalError | events.FatalError):
            errors.append(f"{getattr(event, 'label', '')}: {event}")
        elif isinstance(event, events.PhaseFinished):
            phases[event.phase.name.value] = event.status.value
    return list(dict.fromkeys(failures)), errors, phases, cases


@pytest.mark.slow
@pytest.mark.usefixtures("in_process_probes")
@pytest.mark.filterwarnings(LARGE_REPR_IS_NOT_A_FINDING)
def test_the_document_says_what_the_api_does(app, client, issuer, caplog):
    # A log line per request is no part of the contract, and 1,400 of them cost seconds.
    caplog.set_level(logging.WARNING, logger="api.request")
    make_customer(client)
    for sku in SEEDED_SKUS:
        make_product(client, sku=sku, stock=1000)
    settings = tomllib.loads(CONFIG.read_text())
    # Imported above already, as pytest names it: a second copy would register twice.
    del settings["hooks"]
    config = schemathesis.Config.from_dict(
        {
            **settings,
            "seed": SEED,
            "workers": 1,
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "headers": {"Authorization": f"Bearer {issuer.token(admin=True)}"},
        }
    )
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app, config=config)
    failures, errors, phases, cases = run(schema)

    assert not errors, "\n".join(errors)
    assert not failures, "\n\n".join(failures)
    # Every phase ran and passed; the stateful one follows the links between operations.
    assert {name: phases.get(name) for name in PHASES} == dict.fromkeys(PHASES, "success"), phases
    assert cases > 1000, cases


@pytest.mark.slow
@pytest.mark.usefixtures("in_process_probes")
def test_an_unavailable_database_is_the_documented_503(app_without_database, issuer):
    # The same checks on what the run above cannot see, bar not_a_server_error:
    # this 5xx is the point. Each takes the connect retry budget (1 s here), so
    # three operations stand for the rest.
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app_without_database)
    admin = {"Authorization": f"Bearer {issuer.token(admin=True)}"}
    for case in (
        schema["/readyz"]["GET"].Case(),
        schema["/products/{sku}"]["GET"].Case(path_parameters={"sku": "ANY-1"}),
        schema["/customers"]["POST"].Case(body={"email": "a@example.com", "name": "A"}),
    ):
        response = case.call_and_validate(headers=admin, excluded_checks=[not_a_server_error])
        assert response.status_code == 503


# Bodies the generated requests do not send: not JSON, too large, another media type.
REFUSED_BODIES = {
    400: ("application/json", "{not json"),
    413: ("application/json", '{"name": "%s"}' % ("x" * 70_000)),
    415: ("text/plain", "email=a"),
}
BODY_OPERATIONS = (
    ("/customers", "POST", {}),
    ("/products", "POST", {}),
    ("/products/{sku}", "PATCH", {"sku": "0"}),
    ("/orders", "POST", {}),
    ("/orders/{order_id}/cancel", "POST", {"order_id": 1}),
)


@pytest.mark.usefixtures("in_process_probes")
@pytest.mark.parametrize("status", sorted(REFUSED_BODIES))
def test_refused_bodies_are_documented_answers(app, issuer, status):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    media_type, data = REFUSED_BODIES[status]
    headers = {"Authorization": f"Bearer {issuer.token(admin=True)}", "Content-Type": media_type}
    for path, method, parameters in BODY_OPERATIONS:
        case = schema[path][method].Case(path_parameters=parameters)
        response = case.call_and_validate(headers=headers, data=data)
        assert response.status_code == status, (method, path)
