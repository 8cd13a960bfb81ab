"""D7: hostile input. Generated and classic malicious requests against the live API, and
malformed SQS bodies through the stock-events handler.

A public API and a queue anyone upstream can write to both get input nobody planned
for. The API must refuse it as problem+json and never answer 5xx (a 5xx pages someone
and hides the real outages); the handler must fail exactly the bad records and apply the
good ones beside them, so one poison message never crashes or blocks a whole batch.
"""

from __future__ import annotations

import http.client
import json
import math
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from schemathesis import GenerationMode

from drills.outages import Pace, lambda_handler
from drills.result import DrillResult
from drills.stage import Stage, customer_id, lost_events
from scripts.invoke_local import LocalContext
from scripts.lambda_loader import unload

MB, HUGE, DIGITS = 2**20, 10**30, "9" * 4000  # DIGITS: a request line under gunicorn's 4094
MISSING = object()  # a near-valid event without the field
JSON = {"Content-Type": "application/json"}
SQLI = ["' OR 1=1--", "%27", "DRILL-0' OR '1'='1", "DRILL-0'; DROP TABLE products;--"]
HOMOGLYPHS = ["DR\u0406LL-0", "DRILL\u20100", "\uff24\uff32\uff29\uff2c\uff2c-0", "DRILL-\uff10"]
TRAVERSAL = ["/../../etc/passwd", "/static/../../x", "/openapi.json/../../etc/passwd"]
TRAVERSAL += ["/products/..%2F..%2Fetc%2Fpasswd", "/products/%2e%2e%2f%2e%2e%2fetc%2fpasswd"]
Probe = tuple[str, str, bytes | None, dict[str, str], set[int]]  # ..., the right statuses
# Reproducible (derandomized, no example database); slow and filtered draws are expected.
HEALTH = [HealthCheck.too_slow, HealthCheck.filter_too_much]
SETTINGS = settings(deadline=None, database=None, derandomize=True, suppress_health_check=HEALTH)


def _draw(strategy: hs.SearchStrategy[Any], examples: int, use: Callable[[Any], None]) -> int:
    """Call `use` on up to `examples` draws (fewer when the space runs dry); count them."""
    calls = 0

    @settings(SETTINGS, max_examples=examples)
    @given(strategy)
    def run(value: Any) -> None:
        nonlocal calls
        calls += 1
        use(value)

    run()
    return calls


@dataclass
class _Tally:
    """What the API and the handler did with the input, and each breach, with its input."""

    statuses: Counter[int] = field(default_factory=Counter)  # the API's answers
    broken: list[str] = field(default_factory=list)  # 5xx, or a 4xx that is not a problem
    unanswered: list[str] = field(default_factory=list)  # no answer, even on a new connection
    dropped: list[str] = field(default_factory=list)  # a kept-alive connection closed under us
    # gunicorn's own answers, before the app runs: 414 (request line over 4094 bytes)
    # and 431 (a header over 8190 bytes), as text/html.
    server_level: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # a classic payload answered oddly
    records: int = 0  # SQS records delivered
    reported: int = 0  # of which batchItemFailures
    crashes: list[str] = field(default_factory=list)  # anything raised but BatchProcessingError
    whole_batch_failed: int = 0  # BatchProcessingError (every record failed)
    missed: list[str] = field(default_factory=list)  # hostile records acknowledged
    valid: list[str] = field(default_factory=list)  # event ids of the valid events sent
    acknowledged: set[str] = field(default_factory=set)  # valid events acknowledged

    def record(self, where: str, status: int, ctype: str, raw: bytes) -> None:
        self.statuses[status] += 1
        if status in (414, 431) and ctype.startswith("text/html"):
            self.server_level.append(f"{status} for {where[:200]}")
        elif status >= 500 or (status >= 400 and not _is_problem(status, ctype, raw)):
            self.broken.append(f"{status} {ctype} {raw[:200]!r} for {where[:1000]}")


def _is_problem(status: int, ctype: str, raw: bytes) -> bool:
    try:
        body = json.loads(raw) if ctype.startswith("application/problem+json") else None
    except ValueError:
        return False
    fields = ("type", "title", "detail")
    good = isinstance(body, dict) and all(isinstance(body.get(k), str) for k in fields)
    return good and body.get("status") == status


def _fuzz_api(base: str, wanted: int, tally: _Tally, token: str) -> int:
    """Schemathesis cases, valid and invalid, for every operation the live document declares."""
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    sent = 0
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {token}"  # the admin's: every operation

        def call(case: Any) -> None:
            try:
                response = case.call(base_url=base, session=session, timeout=30)
            except requests.RequestException as exc:
                tally.unanswered.append(f"{type(exc).__name__}: {case.as_curl_command()}")
                return
            ctype = (response.headers.get("content-type") or [""])[0]
            tally.record(case.as_curl_command(), response.status_code, ctype, response.content)

        # Operations without inputs (/healthz) run dry at once; the others share the rest.
        for done, operation in enumerate(operations):
            modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            cases = hs.one_of(*(operation.as_strategy(mode) for mode in modes))
            share = max(1, math.ceil((wanted - sent) / (len(operations) - done)))
            sent += _draw(cases, share, call)
    return sent


def _probes(cid: int) -> list[Probe]:
    """Classic hostile requests; the first ones create what generated requests name most."""

    def j(value: Any) -> bytes:
        return json.dumps(value).encode()

    def order(sku: Any = "DRILL-0", quantity: Any = 1, customer: Any = cid) -> bytes:
        return j({"customer_id": customer, "lines": [{"sku": sku, "quantity": quantity}]})

    def customer(email: str, name: str = "x") -> bytes:
        return j({"email": email, "name": name})

    def product(sku: Any, stock: Any = 10**6, price: Any = 1) -> bytes:
        return j({"sku": sku, "name": "x", "price_cents": price, "stock": stock})

    get_404 = [f"/products/{quote(s, safe='%')}" for s in SQLI + HOMOGLYPHS] + TRAVERSAL
    get_404 += ["/customers/1%20OR%201=1", "/products/A%00B", "/orders/-1", f"/orders/{DIGITS}"]
    get_404 += [f"/orders/{HUGE}", f"/customers/{HUGE}"]
    get_422 = ["/products?next=%27%20OR%201%3D1--", "/products?stock_below=1%20OR%201%3D1"]
    get_422 += ["/products?next=%00", f"/products?limit={HUGE}", "/products?limit=-1"]
    get_422 += [f"/products?stock_below={DIGITS}"]
    orders_422 = [order(sku=s) for s in SQLI + HOMOGLYPHS + ["DRILL-0\x00"]]
    orders_422 += [order(customer="1 OR 1=1"), order(customer=HUGE), order(customer=-1)]
    orders_422 += [order(quantity=q) for q in (HUGE, -1, 0, float("inf"), float("nan"))]
    customers_422 = [customer("' OR 1=1--@example.com"), customer("a\x00@example.com")]
    customers_422 += [customer("nul@example.com", "a\x00b"), customer("dr\u0456ll@example.com")]
    customers_422 += [customer("h@ex\u0430mple.com")]
    customers_422 += [b'{"email": "d@example.com", "email": "no", "name": "x"}']
    products_422 = [product("../../etc/passwd"), product("NUL\x00"), product("H", HUGE)]
    products_422 += [product("N", -1), product("P", price=HUGE), product("Q", price=-1)]
    bad_400 = [b"<order/>", b"{" * 30_000, b"[" * 30_000, b"[" * 30_000 + b"]" * 30_000]
    bad_400 += [b'{"email": "\xff\xfe@example.com", "name": "x"}', b'{"name": "\xc0\xaf"}']
    bad_400 += [b'{"email": "raw@example.com", "name": "\x00"}']
    bad_400 += [b'{"customer_id": 1' + b"0" * 5000 + b', "lines": []}']
    too_large = [b'{"sku": "BIG", "name": "' + b"x" * 2 * MB + b'"}', b"[" * 100_000]
    wrong_types = ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
    wrong_types += ["multipart/form-data; boundary=x", "text/json"]
    # Accepted, and stored as the text they are: injection is not interpretation.
    customers_201 = [customer("o'x'--@example.com", "');DROP TABLE x;--")]
    customers_201 += [b'{"email": "no", "email": "d@example.com", "name": "x"}']
    customers_201 += [customer("h@example.com", "\uff24\u202e\u0430")]
    return [
        *[("POST", "/products", product(sku), JSON, {201}) for sku in ("A", "0", "FUZZ-1")],
        *[("GET", path, None, {}, {404}) for path in get_404],
        *[("GET", path, None, {}, {422}) for path in get_422],
        *[("POST", "/orders", body, JSON, {422}) for body in orders_422],
        *[("POST", "/customers", body, JSON, {422}) for body in customers_422],
        *[("POST", "/products", body, JSON, {422}) for body in products_422],
        *[("POST", "/orders", body, JSON, {400}) for body in bad_400],
        *[("POST", "/products", body, JSON, {413}) for body in too_large],
        *[("POST", "/orders", order(), {"Content-Type": t}, {415}) for t in wrong_types],
        *[("POST", "/customers", body, JSON, {201}) for body in customers_201],
        ("POST", "/customers", customer("c@example.com"), {}, {415}),
        ("POST", "/orders", order(), {**JSON, "Idempotency-Key": "' OR 1=1--"}, {422}),
        ("PATCH", "/products/FUZZ-1", b'{"price_cents": 5, "price_cents": -5}', JSON, {422}),
        ("DELETE", "/products/DRILL-0", None, {}, {405}),
        # Refused by gunicorn before the app (request line over 4094, a header over 8190).
        ("GET", "/products/" + "A" * 5000, None, {}, {414}),
        ("GET", "/products", None, {"X-Request-Id": "a" * 9000}, {431}),
        ("PUT", "/orders/1", order(), JSON, {405}),
    ]


def _send_probes(base: str, cid: int, tally: _Tally, token: str) -> int:
    """The classic payloads, raw over http.client (no client-side encoding or cleanup)."""
    split = urlsplit(base)
    conn = http.client.HTTPConnection(split.hostname or "", split.port, timeout=30)
    probes, previous = _probes(cid), ""
    try:
        for method, path, body, headers, right in probes:
            where, response = f"{method} {path[:80]} {(body or b'')[:60]!r}", None
            while response is None:
                reused = conn.sock is not None
                try:
                    auth = {"Authorization": f"Bearer {token}"}
                    conn.request(method, path, body=body, headers={**auth, **headers})
                    response = conn.getresponse()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    if not reused:
                        tally.unanswered.append(f"{where}: {exc!r}")
                        break
                    # The answer before said keep-alive; ask again on a new connection.
                    tally.dropped.append(f"{where}: {exc!r}; the answer before: {previous}")
            if response is not None:
                raw, status = response.read(), response.status
                previous = f"{where} -> {status} Connection: {response.getheader('Connection')}"
                tally.record(where, status, response.getheader("Content-Type") or "", raw)
                if status not in right:
                    tally.unexpected.append(f"{where} -> {status}, expected {sorted(right)}")
    finally:
        conn.close()
    return len(probes)


# -- the stock-events handler ---------------------------------------------------------

_VALUE = hs.recursive(
    hs.none() | hs.booleans() | hs.integers() | hs.floats() | hs.text(),
    lambda inner: hs.lists(inner, max_size=4) | hs.dictionaries(hs.text(), inner, max_size=4),
    max_leaves=12,
)
_NOT_TEXT = _VALUE.filter(lambda value: not isinstance(value, str))
# Blank once stripped; text PostgreSQL cannot store (NUL) or UTF-8 cannot encode (surrogates).
_BLANK = hs.text(alphabet=" \t\n\r\x0b\x0c\xa0\u2003\u3000", max_size=4)
_POISON = hs.tuples(hs.text(max_size=8), hs.sampled_from("\x00\ud800\udfff"), hs.text(max_size=8))


def _text_wrong(limit: int) -> hs.SearchStrategy[Any]:
    too_long = hs.integers(limit + 1, limit + 5000).map(lambda n: "x" * n)
    return _NOT_TEXT | _BLANK | too_long | _POISON.map("".join)


# Per field, values wrong by construction; the rest of the valid event stays intact.
_WRONG: dict[str, hs.SearchStrategy[Any]] = {
    "event_id": _text_wrong(200),
    "sku": _text_wrong(64) | hs.text().map("D7-NO-SUCH-".__add__),
    "reason": _text_wrong(500),
    "delta": _VALUE.filter(lambda v: not isinstance(v, int) or isinstance(v, bool))
    | hs.integers(min_value=2**31)
    | hs.integers(max_value=-(2**31)),
    "occurred_at": _NOT_TEXT
    | hs.sampled_from(["", "2026-01-01T00:00:00", "2026-13-01T00:00Z", "2026-02-30T00:00Z"])
    | hs.sampled_from(["2026-01-01T25:00:00+00:00", "last tuesday", "1767225600"]),
}
# (field, a wrong value or MISSING): a near-valid event, its own event id filled in later.
_NEAR_VALID = hs.sampled_from(sorted(_WRONG)).flatmap(
    lambda name: hs.tuples(hs.just(name), _WRONG[name] | hs.just(MISSING))
)
_BODIES = hs.one_of(hs.text(), _VALUE.map(json.dumps), _NEAR_VALID)


def _event(event_id: str, **fields: Any) -> dict[str, Any]:
    good = {"event_id": event_id, "sku": "DRILL-0", "delta": 1, "reason": "fuzz"}
    return {**good, "occurred_at": "2026-01-01T00:00:00+00:00", **fields}


def _body(drawn: Any, n: int) -> str:
    """A drawn body as the record's text; a near-valid event gets an event id of its own."""
    if isinstance(drawn, str):
        return drawn
    name, value = drawn
    event = {**_event(f"d7-bad-{n}"), name: value}
    if value is MISSING:
        del event[name]
    return json.dumps(event)


def _classic_bodies() -> list[str]:
    cut = json.dumps(_event("d7-bad-classic"))[:-1]  # a valid event without its closing brace
    bodies = ["[" * 100_000, "{" * 100_000, '{"a":' * 100_000, "[" * 50_000 + "]" * 50_000]
    bodies += ["", " ", "null", "[]", "{}", "0", "true", "\x00", '"\\ud800"', "x" * MB]
    bodies += [f'{cut}, "delta": {v}}}' for v in ("1e400", "-1e400", "NaN", "1" + "0" * 5000)]
    bodies += [f'{cut}, "{k}": {v}}}' for k, v in [("delta", '"1"'), ("reason", '"a\x00b"')]]
    bodies += [f'{cut}, "{k}": "\\ud800"}}' for k in ("event_id", "sku", "reason")]
    bodies += [f'{cut}, "{k}": "\\u0000"}}' for k in ("event_id", "sku", "reason")]
    for name, value in [("delta", HUGE), ("delta", -(2**31) + 1), ("reason", "x" * MB)]:
        bodies.append(json.dumps(_event(f"d7-bad-c{len(bodies)}", **{name: value})))
    return [*bodies, json.dumps(_event("x" * MB)), json.dumps(_event("d7-bad-sku", sku="x" * MB))]


def _fuzz_lambda(st: Stage, wanted: int, tally: _Tally) -> int:
    """Batches of 9 hostile bodies and 1 valid event, in-process, as SQS delivers them."""
    classic, drawn = _classic_bodies(), []
    _draw(_BODIES, max(1, wanted - len(classic)), drawn.append)
    hostile = [_body(value, n) for n, value in enumerate(drawn)] + classic
    handler: Any = lambda_handler(st)
    try:
        for start in range(0, len(hostile), 9):
            chunk = {f"bad-{start + k}": body for k, body in enumerate(hostile[start : start + 9])}
            records = [{"messageId": mid, "body": body} for mid, body in chunk.items()]
            valid = f"d7-valid-{start}"
            records.insert(start % 10, {"messageId": valid, "body": json.dumps(_event(valid))})
            tally.valid.append(valid)
            tally.records += len(records)
            event = {"Records": [{**record, "eventSource": "aws:sqs"} for record in records]}
            try:
                response = handler.stock_events_handler(event, LocalContext())
            except handler.BatchProcessingError:
                tally.whole_batch_failed += 1
                continue
            except Exception:
                bodies = [body[:40] for body in chunk.values()]
                tally.crashes.append(f"bodies {bodies}: {traceback.format_exc(limit=-4)}")
                continue
            failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
            tally.reported += len(failed)
            tally.missed += [f"{mid}: {chunk[mid][:200]!r}" for mid in chunk if mid not in failed]
            if valid not in failed:
                tally.acknowledged.add(valid)
    finally:
        unload(handler)
    return len(drawn)


# -- the drill ----------------------------------------------------------------------------


def d7_hostile(
    st: Stage, pace: Pace, *, api_cases: int = 1000, sqs_bodies: int = 1000
) -> DrillResult:
    """D7. `pace` is unused (no fault, no phases to time): the counts size this drill."""
    result = DrillResult(
        "D7",
        "hostile input",
        f"{api_cases:,} generated API requests + classic payloads; "
        f"{sqs_bodies:,} generated SQS bodies",
        "—",
    )
    tally = _Tally()
    with st.api() as base:
        classic = _send_probes(
            base, customer_id(st), tally, st.admin_token
        )  # first: it seeds products
        generated = _fuzz_api(base, api_cases, tally, st.admin_token)
    log = st.root / "lambda.log"  # shared with other drills on this stage: read only ours
    offset = log.stat().st_size if log.exists() else 0
    drawn = _fuzz_lambda(st, sqs_bodies, tally)
    rows = st.query("SELECT event_id FROM stock_events WHERE event_id LIKE 'd7-%%'")
    ledger = {event_id for (event_id,) in rows}
    with log.open("rb") as handle:
        handle.seek(offset)
        logged = handle.read().count(b'"stock event failed"')

    answered, unanswered = sum(tally.statuses.values()), len(tally.unanswered + tally.dropped)
    result.requests = answered + unanswered + tally.records
    result.refused = sum(n for s, n in tally.statuses.items() if 400 <= s < 500) + tally.reported
    result.lost = lost_events(st, tally.acknowledged)
    hostile, valid = tally.records - len(tally.valid), set(tally.valid)
    result.checks = {
        "0 API responses with status >= 500": not any(s >= 500 for s in tally.statuses),
        "every 4xx the app answers is problem+json with its status, type, title, detail": (
            not tally.broken
        ),
        "every API request got an HTTP answer": not tally.unanswered,
        "every classic API payload got the status it should": not tally.unexpected,
        f"at least {api_cases} generated API requests": generated >= api_cases,
        "the handler raised nothing but BatchProcessingError": not tally.crashes,
        "no batch failed whole (each had a valid event)": tally.whole_batch_failed == 0,
        "every hostile record is in batchItemFailures": not tally.missed,
        "every valid event acknowledged and in stock_events": tally.acknowledged == valid
        and valid <= ledger,
        "no hostile event in stock_events": not {e for e in ledger if e.startswith("d7-bad-")},
        f"at least {sqs_bodies} hostile SQS bodies": hostile >= sqs_bodies,
    }
    counted = ", ".join(f"{n}x {status}" for status, n in sorted(tally.statuses.items()))
    result.notes += [
        f"API: {generated} generated + {classic} classic requests: {counted}",
        f"SQS: {tally.records} records in {len(valid)} batches of one valid event and "
        f"{drawn} generated + {hostile - drawn} classic hostile bodies; "
        f"{tally.reported} batch item failures, {logged} 'stock event failed' log lines",
        "requests and refused count API requests and SQS records alike",
    ]
    if tally.server_level or tally.dropped:
        # Known limits of gunicorn itself, outside the app: a buffering proxy in front
        # (the serving-model work of the security issue) answers or absorbs both.
        result.notes.append(
            f"not the app: gunicorn answered {len(tally.server_level)} requests itself as "
            "text/html (414 request line over 4094 bytes, 431 header over 8190 bytes), and "
            f"closed {len(tally.dropped)} kept-alive connections after a 413 whose body it "
            "did not read (the client re-sent on a new connection)"
        )
    for label, found in [
        ("API 5xx or 4xx not a problem", tally.broken),
        ("API no answer", tally.unanswered),
        ("API unexpected status", tally.unexpected),
        ("handler crash", tally.crashes),
        ("hostile record acknowledged", tally.missed),
    ]:
        result.notes += [f"{label}: {item}" for item in found[:5]]
        result.notes += [f"{label}: and {len(found) - 5} more"] if len(found) > 5 else []
    return result
