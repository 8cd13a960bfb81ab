"""D1-D4 and D9: the database fails over, restarts, pauses, goes silent, or runs away,
while the API (gunicorn) and the Lambda handler keep working against it."""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from types import ModuleType
from urllib.parse import urlsplit

import psycopg2

from dataaccess import Database, Settings
from drills.load import ApiLoad, LambdaLoad
from drills.result import DrillResult
from drills.stage import (
    REPO,
    SKUS,
    Stage,
    customer_id,
    lost_events,
    lost_orders,
    oversold,
)
from scripts.lambda_loader import load_fresh_handler, unload

# Every failed API request must be this (the failure model's API budget).
UNAVAILABLE = 503


@dataclass(frozen=True)
class Pace:
    """How long each phase lasts: the full drill, or the short one `make test` runs."""

    warmup: float
    pause: float  # D3: the database is down this long
    endpoint_moves_after: float  # D1: promoted -> endpoint repointed
    blackhole: float  # D4
    settle: float

    @classmethod
    def full(cls) -> Pace:
        return cls(warmup=3, pause=15, endpoint_moves_after=5, blackhole=10, settle=5)

    @classmethod
    def short(cls) -> Pace:
        return cls(warmup=1, pause=5, endpoint_moves_after=3, blackhole=6, settle=2)


def lambda_handler(st: Stage) -> ModuleType:
    """The stock-events handler module with a Database on the endpoint, as in Lambda."""
    # Powertools' logger writes to the sys.stdout of its creation: the stage's log.
    with contextlib.redirect_stdout(st.open_log("lambda")):
        handler = load_fresh_handler()
    env = st.app_env(AWS_LAMBDA_FUNCTION_NAME="drill-stock-events")
    handler.set_database(Database.from_settings(Settings.from_env(env)))
    return handler


def _under_load(
    st: Stage,
    result: DrillResult,
    fault: Callable[[], float],
    pace: Pace,
    *,
    api_env: dict[str, str] | None = None,
    with_lambda: bool = True,
) -> tuple[ApiLoad, LambdaLoad | None, float]:
    """Run the load, inflict `fault` (it returns the moment the database is back), settle."""
    handler = lambda_handler(st) if with_lambda else None
    with st.api(**(api_env or {})) as base:
        api = ApiLoad(base, customer_id(st), st.admin_token).start()
        lam = LambdaLoad(handler).start() if handler is not None else None
        try:
            time.sleep(pace.warmup)
            back_at = fault()
            time.sleep(pace.settle)
        finally:
            api.stop()
            if lam is not None:
                lam.stop()
    if handler is not None:
        unload(handler)
    _figures(st, result, api, lam, back_at)
    return api, lam, back_at


def _figures(
    st: Stage, result: DrillResult, api: ApiLoad, lam: LambdaLoad | None, back_at: float
) -> None:
    failures = api.failures()
    result.requests = len(api.replies) + (lam.invocations if lam else 0)
    result.refused = len(failures) + (lam.failed_invocations if lam else 0)
    result.lost = lost_orders(st, api.acknowledged) + (
        lost_events(st, lam.acknowledged) if lam else 0
    )
    result.recovery_s = api.first_success_after(back_at)
    result.checks["every failed request is 503 problem+json with Retry-After"] = all(
        r.status == UNAVAILABLE and r.problem and r.retry_after for r in failures
    )
    result.checks["the API succeeds again after the fault"] = result.recovery_s is not None
    result.checks["0 oversell"] = oversold(st) == 0
    if lam is not None:
        result.checks["the Lambda handler never crashed"] = not lam.crashes
        result.checks["events acknowledged during the drill"] = bool(lam.acknowledged)
    if failures:
        statuses = Counter(f"{r.method} {r.status or 'no answer'}" for r in failures)
        counted = ", ".join(f"{n}x {s}" for s, n in sorted(statuses.items()))
        result.notes.append(f"failed: {counted}")
    if any(r.status != UNAVAILABLE for r in failures):
        result.notes.extend(_server_errors(st))
    events = len(lam.acknowledged) if lam else 0
    result.notes.append(f"{len(api.acknowledged)} orders and {events} events acknowledged")


def _server_errors(st: Stage) -> list[str]:
    """What the API logged about its unexpected errors (type and traceback, never values)."""
    found = []
    for path in st.logs:
        if path.name.startswith("api-") and path.exists():
            lines = path.read_text(errors="replace").splitlines()
            for n, line in enumerate(lines):
                if any(m in line for m in ("unexpected database error", "unhandled", "Traceback")):
                    found.append(" | ".join(lines[n : n + 25])[:3000])
    return found


def d1_failover(st: Stage, pace: Pace) -> DrillResult:
    result = DrillResult(
        "D1",
        "writer failover",
        "API orders + reads; Lambda batches",
        "old writer restarted read-only, standby promoted, "
        f"endpoint moves {pace.endpoint_moves_after:g} s later",
    )
    old = st.pair.primary

    def fault() -> float:
        st.pair.demote_old_primary()
        st.pair.promote()
        time.sleep(pace.endpoint_moves_after)
        st.endpoint.point_to(st.pair.standby.port)
        return time.monotonic()

    _under_load(st, result, fault, pace)
    result.checks["first success within 2 s of the endpoint moving"] = (
        result.recovery_s is not None and result.recovery_s <= 2.0
    )
    result.checks["0 connections left on the read-only server"] = st.app_sessions(old) == 0
    return result


def d2_restart(st: Stage, pace: Pace) -> DrillResult:
    result = DrillResult(
        "D2", "restart under load", "API orders + reads; Lambda batches", "pg_ctl restart -m fast"
    )

    def fault() -> float:
        st.pair.restart_primary("fast")
        return time.monotonic()

    _under_load(st, result, fault, pace)
    return result


def d3_pause(st: Stage, pace: Pace) -> DrillResult:
    result = DrillResult(
        "D3",
        "pause / resume",
        "API; Lambda invocations and a migration started while down",
        f"database stopped, started {pace.pause:g} s later",
    )
    outcomes: dict[str, bool] = {}

    def fault() -> float:
        st.pair.stop_primary("fast")
        with ExitStack() as stack:
            handler = lambda_handler(st)
            stack.callback(unload, handler)
            invoker = LambdaLoad(handler)
            threads = [
                threading.Thread(target=_invoke_once, args=(invoker, i, outcomes)) for i in range(2)
            ]
            migration = _start_migration(st)
            for thread in threads:
                thread.start()
            time.sleep(pace.pause)
            st.pair.start_primary()
            back_at = time.monotonic()
            for thread in threads:
                thread.join(timeout=60)
            outcomes["migration"] = migration.wait(timeout=120) == 0
        return back_at

    api, _, _ = _under_load(st, result, fault, pace, with_lambda=False)
    result.checks["invocations started during the pause succeed after the resume"] = outcomes.get(
        "invocation-0", False
    ) and outcomes.get("invocation-1", False)
    result.checks["the migration waits, then completes"] = outcomes.get("migration", False)
    result.checks["the API answered 503 while paused"] = any(
        r.status == UNAVAILABLE for r in api.replies
    )
    return result


def _invoke_once(invoker: LambdaLoad, n: int, outcomes: dict[str, bool]) -> None:
    bodies = {
        f"pause-{n}-{i}-{time.monotonic_ns()}": (
            f'{{"event_id": "pause-{n}-{i}-{time.monotonic_ns()}", "sku": "{SKUS[i]}", "delta": 1, '
            f'"reason": "drill", "occurred_at": "2026-01-01T00:00:00+00:00"}}'
        )
        for i in range(3)
    }
    outcomes[f"invocation-{n}"] = invoker.invoke(bodies) == set(bodies)


def _start_migration(st: Stage) -> subprocess.Popen[bytes]:
    """`alembic upgrade head` as the migration task runs it: master user, through the endpoint."""
    server = st.writer
    env = {
        **os.environ,
        **st.app_env(DB_USER=server.user, DB_PASSWORD=server.password),
    }
    log = st.open_log("migration")
    return subprocess.Popen(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def d4_blackhole(st: Stage, pace: Pace) -> DrillResult:
    # Short timeouts, so the drill shows the bound without waiting half a minute.
    env = {
        "DB_STATEMENT_TIMEOUT_MS": "1000",
        "DB_SOCKET_TIMEOUT": "3",
        "DB_CONNECT_TIMEOUT": "2",
        "DB_CONNECT_RETRY_BUDGET": "3",
    }
    # A read's worst case: one socket-bounded wait on its dead pooled connection, then
    # its one retry's connect budget, plus that budget's last 2 s attempt; 1 s of slack.
    bound = 3 + 3 + 2 + 1
    result = DrillResult(
        "D4",
        "black-holed writer",
        "API orders + reads",
        f"the endpoint stops answering for {pace.blackhole:g} s (no RST)",
    )

    def fault() -> float:
        st.endpoint.blackhole(True)
        time.sleep(pace.blackhole)
        st.endpoint.blackhole(False)
        return time.monotonic()

    api, _, _ = _under_load(st, result, fault, pace, api_env=env, with_lambda=False)
    slowest = max((r.elapsed for r in api.replies), default=0.0)
    result.checks[f"no request waited longer than {bound:g} s"] = slowest <= bound
    result.checks["requests failed during the black hole"] = bool(api.failures())
    result.notes.append(f"slowest request {slowest:.1f} s (DB_SOCKET_TIMEOUT=3, budget 3 s)")
    return result


def d9_runaway(st: Stage, pace: Pace) -> DrillResult:
    result = DrillResult(
        "D9",
        "runaway query",
        "one PATCH blocked on a row lock",
        "a statement past DB_STATEMENT_TIMEOUT_MS=1000",
    )
    locker = st.admin()
    with st.api(DB_STATEMENT_TIMEOUT_MS="1000") as base:
        api = ApiLoad(
            base, customer_id(st), st.admin_token, threads=0
        )  # its client, without its threads
        split = urlsplit(base)
        conn = http.client.HTTPConnection(split.hostname or "", split.port, timeout=30)
        api.send(conn, "PATCH", f"/products/{SKUS[0]}", {"price_cents": 101}, None)  # warm
        with locker.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT 1 FROM products WHERE sku = %s FOR UPDATE", (SKUS[0],))
            status, _ = api.send(conn, "PATCH", f"/products/{SKUS[0]}", {"price_cents": 102}, None)
            cur.execute("ROLLBACK")
        sessions_after_timeout = _app_pids(st)
        after, _ = api.send(conn, "PATCH", f"/products/{SKUS[0]}", {"price_cents": 103}, None)
        reused = _app_pids(st) == sessions_after_timeout
        conn.close()
    locker.close()
    timed_out = api.replies[1]
    result.requests = len(api.replies)
    result.refused = len(api.failures())
    result.checks["cancelled: 503 problem+json"] = status == UNAVAILABLE and timed_out.problem
    result.checks["answered within the timeout plus 1 s"] = timed_out.elapsed <= 2.0
    result.checks["the connection is reused afterwards"] = after == 200 and reused
    result.recovery_s = 0.0 if after == 200 else None
    result.notes.append(f"the blocked request took {timed_out.elapsed:.2f} s")
    return result


def _app_pids(st: Stage) -> set[int]:
    try:
        rows = st.query("SELECT pid FROM pg_stat_activity WHERE usename = 'app_iam'")
    except psycopg2.Error:
        return set()
    return {pid for (pid,) in rows}
