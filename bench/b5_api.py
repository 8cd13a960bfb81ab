"""B5: GET /products/<sku> under load: the API under gunicorn vs a minimal Flask + psycopg2 app."""

from __future__ import annotations

import functools
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from flask import Flask, abort
from flask.testing import FlaskClient

from scripts.localauth import LocalIssuer
from scripts.localpg import free_port

from .harness import BenchDB, Row, Sizes, median, rotate, sku, timed

REPO = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"
WORKERS, THREADS, CONNECTIONS = 2, 4, 8


@functools.cache
def issuer() -> LocalIssuer:
    """A local token issuer: our API checks a bearer token on every request.

    Both sides get the same header; the baseline ignores it, so the token check is
    part of what ours costs.
    """
    return LocalIssuer(REPO / ".localpg" / "bench-issuer")  # git-ignored, reused


def auth_header() -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer().token(admin=True)}"}


def app_env(bdb: BenchDB) -> dict[str, str]:
    """What both apps read: the same pool size, database and log level."""
    return {
        **issuer().env(),
        "WEB_CONCURRENCY": str(WORKERS),
        "GUNICORN_THREADS": str(THREADS),
        # Request logs off on both sides: the baseline has none to write.
        "LOG_LEVEL": "WARNING",
        **replace(bdb.app_settings(), pool_size=THREADS, max_overflow=0).to_env(),
    }


@contextmanager
def served(app: str, bdb: BenchDB) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Run `app` under gunicorn with the API's config file; yield it and its port."""
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), **app_env(bdb)}
    proc = subprocess.Popen(
        [str(GUNICORN), "-c", str(REPO / "api" / "gunicorn.conf.py"), app],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc, port
    finally:
        # SIGINT is gunicorn's quick shutdown; nothing is in flight by now.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(proc: subprocess.Popen[bytes], port: int) -> int:
    deadline = time.monotonic() + 60
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", f"/products/{sku(0)}", headers=auth_header())
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return port
        except OSError:
            pass
        finally:
            conn.close()
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gunicorn on port {port} did not start")
        time.sleep(0.1)


def load(port: int, seconds: float) -> dict[str, float]:
    """Load from a separate process, so the generator does not share our GIL."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--port",
            str(port),
            "--seconds",
            str(seconds),
            "--connections",
            str(CONNECTIONS),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BENCH_AUTHORIZATION": auth_header()["Authorization"]},
    )
    return dict(json.loads(out.stdout))


def with_reference_reads(app: Flask) -> dict[str, str]:
    """Add to our API app the same view twice more, with other data access.

    Same app, hooks, SpecTree decorator and response model as GET /products/<sku>;
    only the read differs: "hand" goes through the baseline's psycopg2 pool (BEGIN,
    SELECT, ROLLBACK), "core" through SQLAlchemy Core on our engine's pool without a
    unit of work but, like ours, without a transaction (the least any data layer on
    SQLAlchemy can do for this read). Returns each route's path prefix.
    """
    import sqlalchemy as sa
    from psycopg2.pool import ThreadedConnectionPool
    from spectree import Response as Responses

    from api.db import get_db
    from api.openapi import output_only
    from api.schemas import Problem, ProductOut
    from dataaccess import tables

    from .baseline_app import make_pool, read_product

    pool: ThreadedConnectionPool = make_pool()
    products = tables.products
    by_sku = sa.select(products).where(products.c.sku == sa.bindparam("sku"))

    def out(row: Any) -> ProductOut:
        if row is None:
            abort(404)
        return ProductOut(sku=row[1], name=row[2], price_cents=row[3], stock=row[4])

    @output_only(resp=Responses(HTTP_200=ProductOut, HTTP_404=Problem))
    def hand_written_product(sku: str) -> ProductOut:
        return out(read_product(pool, sku))

    @output_only(resp=Responses(HTTP_200=ProductOut, HTTP_404=Problem))
    def bare_core_product(sku: str) -> ProductOut:
        with get_db().writer.connect() as connection:
            # psycopg2's flag, as ours sets it; Database clears it at checkin.
            connection.connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]
            return out(connection.execute(by_sku, {"sku": sku}).one_or_none())

    app.add_url_rule("/hand-written/<sku>", view_func=hand_written_product)
    app.add_url_rule("/bare-core/<sku>", view_func=bare_core_product)
    return {"hand": "/hand-written", "core": "/bare-core"}


def cpu_per_request(bdb: BenchDB, sizes: Sizes, env: dict[str, str]) -> dict[str, float]:
    """Median µs per GET through Flask's test client, in this process: CPU, no HTTP, no load.

    In rotation: ours, the baseline, and our app with the reference reads.
    """
    from api import create_app

    from .baseline_app import create_app as create_baseline

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        ours_app, base_app = create_app(), create_baseline()
        prefixes = with_reference_reads(ours_app)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    ours_client, base_client = ours_app.test_client(), base_app.test_client()
    for client in (ours_client, base_client):
        client.environ_base["HTTP_AUTHORIZATION"] = auth_header()["Authorization"]

    def get(client: FlaskClient, prefix: str = "/products") -> Callable[[int], object]:
        path = f"{prefix}/{sku(0)}"
        return lambda _: client.get(path)

    ours, base, hand, core = rotate(
        [
            lambda n: timed(get(ours_client), n),
            lambda n: timed(get(base_client), n),
            lambda n: timed(get(ours_client, prefixes["hand"]), n),
            lambda n: timed(get(ours_client, prefixes["core"]), n),
        ],
        total=max(sizes.reads // 5, 10),
        rounds=sizes.rounds * 2,
    )
    return {
        name: median(values) * 1e6
        for name, values in {"ours": ours, "base": base, "hand": hand, "core": core}.items()
    }


def run(bdb: BenchDB, sizes: Sizes) -> Row:
    rounds = sizes.rounds
    slice_ = sizes.http_seconds / rounds
    ours: list[dict[str, float]] = []
    base: list[dict[str, float]] = []
    with (
        served("api:create_app()", bdb) as ours_server,
        served("bench.baseline_app:create_app()", bdb) as base_server,
    ):
        ours_port, base_port = wait_ready(*ours_server), wait_ready(*base_server)
        load(ours_port, min(2.0, slice_))
        load(base_port, min(2.0, slice_))
        for r in range(rounds):
            pair = [(ours_port, ours), (base_port, base)]
            for port, results in pair if r % 2 == 0 else reversed(pair):
                results.append(load(port, slice_))
    cpu = cpu_per_request(bdb, sizes, app_env(bdb))
    ours_cpu, base_cpu = cpu["ours"], cpu["base"]
    # Our app's own cost without the data layer, and what the data layer may cost
    # per request for the goal's ratio, given the rest.
    app_only = cpu["base"] / cpu["hand"]
    budget = cpu["base"] / 0.8 - cpu["hand"]
    ours_rps = median([x["rps"] for x in ours])
    base_rps = median([x["rps"] for x in base])
    errors = sum(x["errors"] for x in ours + base)
    return Row(
        key="B5",
        workload=f"GET /products/<sku> under load, {sizes.http_seconds:g} s per side",
        ours=ours_rps,
        baseline=base_rps,
        unit="requests/s, median of rounds",
        goal="throughput ratio ≥ 0.8; p99 reported",
        better="higher",
        limit=0.8,
        notes=[
            f"p99 latency: ours {median([x['p99_ms'] for x in ours]):.1f} ms, baseline "
            f"{median([x['p99_ms'] for x in base]):.1f} ms (p50 "
            f"{median([x['p50_ms'] for x in ours]):.1f} / "
            f"{median([x['p50_ms'] for x in base]):.1f} ms); non-200 responses or errors: "
            f"{errors}.",
            f"both under gunicorn with api/gunicorn.conf.py: {WORKERS} workers x {THREADS} "
            "threads (gthread, buffering each request before a thread takes it), "
            "`gc.freeze()` once a worker has loaded its app and the youngest generation "
            "collected every 50,000 objects, "
            "LOG_LEVEL=WARNING; load from a separate process "
            f"(bench/loadgen.py: {CONNECTIONS} keep-alive connections on threads) on "
            f"127.0.0.1, {rounds} alternating rounds of {slice_:g} s per side after a warm-up. "
            "Load generator, servers and PostgreSQL share the same 2 CPUs.",
            "ours: `api:create_app()` (the SpecTree-documented view, one read-only "
            "autocommit unit of work per request: its SELECT is the only statement sent; "
            "the request-id and request-log hooks, problem+json handlers). "
            "baseline: bench/baseline_app.py, one Flask view over a psycopg2 "
            "ThreadedConnectionPool, psycopg2's default transaction (BEGIN, SELECT, "
            "ROLLBACK: three round trips), no validation, no request id or log.",
            "the servers are CPU-bound here (load generator, both gunicorns' workers and "
            "PostgreSQL share 2 CPUs), so the ratio is CPU per request. Through Flask's test "
            f"client in one process (no HTTP, no load), ours takes {ours_cpu:.0f} µs per "
            f"request and the baseline {base_cpu:.0f} µs: {base_cpu / ours_cpu:.2f} is the "
            "throughput ratio that CPU cost alone predicts.",
            "where that CPU goes: the same app with the same view, hooks, SpecTree decorator "
            "and response model, reading through the baseline's psycopg2 pool instead of "
            f"`dataaccess`, takes {cpu['hand']:.0f} µs. So the API's own features (request id "
            "and log hooks, the JSON-body and problem+json handlers, SpecTree and pydantic "
            f"serialisation, Flask's teardown) cost {cpu['hand'] - cpu['base']:.0f} µs that "
            f"the minimal baseline does not have (alone they give a ratio of {app_only:.2f}), "
            f"and the data layer {ours_cpu - cpu['hand']:+.0f} µs against that pool's read, "
            "which sends three statements where ours sends one. At the goal's 0.8 the "
            f"data layer could cost {budget:.0f} µs.",
            "the least SQLAlchemy can do for this read, the same view reading through Core on "
            "our engine's pool, also without a transaction (`engine.connect()` + execute with "
            f"psycopg2's autocommit flag, no unit of work, no record), takes {cpu['core']:.0f} "
            f"µs; ours adds {ours_cpu - cpu['core']:+.0f} µs on top of it (the unit of work, "
            "its SELECT-only check, the record).",
        ],
        extra={
            "ours_p99_ms": median([x["p99_ms"] for x in ours]),
            "app_only_ratio": app_only,
            "data_layer_budget_us": budget,
            "core_us": cpu["core"],
        },
    )
