"""What every workload shares: a migrated, seeded database, alternating timing, result rows."""

from __future__ import annotations

import os
import random
import secrets
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras

from dataaccess import Settings
from scripts.devdb import local_settings, migrate, set_password
from scripts.localpg import LocalPostgres, free_port, tls_env, usable_root

# Our own login role, so a benchmark sharing a cluster with the test session
# never touches the password the tests gave the application role.
BENCH_ROLE = "bench_app"
PRODUCTS = 1000
CUSTOMERS = 100
START_STOCK = 1_000_000_000


def sku(i: int) -> str:
    return f"BENCH-{i:05d}"


@dataclass(frozen=True)
class Sizes:
    """How much work each workload does, per side, in full or smoke mode."""

    reads: int = 10_000  # B1
    orders: int = 2_000  # B2
    events: int = 100_000  # B3
    connects: int = 1_000  # B4
    http_seconds: float = 20.0  # B5, per side
    invocations: int = 200  # B6
    rounds: int = 5
    imports: int = 5  # B6 cold imports, per module
    cold_starts: int = 30  # B7 fresh interpreters, per side

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(
            reads=100,
            orders=30,
            events=600,
            connects=10,
            http_seconds=1.0,
            invocations=10,
            rounds=2,
            imports=1,
            cold_starts=2,
        )


@dataclass
class Row:
    """One line of the results table."""

    key: str
    workload: str
    ours: float
    baseline: float
    unit: str
    goal: str
    # "lower" when smaller numbers are better (latency), "higher" for throughput.
    better: str
    limit: float
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline

    @property
    def met(self) -> bool:
        return self.ratio <= self.limit if self.better == "lower" else self.ratio >= self.limit

    @property
    def ratio_text(self) -> str:
        """The ratio to two decimals, or three where two would round a miss onto the goal."""
        text = f"{self.ratio:.2f}"
        return f"{self.ratio:.3f}" if float(text) == self.limit and not self.met else text


@dataclass(frozen=True)
class BenchDB:
    """A fresh database in a running cluster, migrated, with the bench login role."""

    host: str
    port: int
    superuser: str
    superpassword: str = field(repr=False)
    name: str
    app_password: str = field(repr=False)
    # The server's CA when it speaks TLS: then both sides of every pair connect with
    # sslmode=verify-full, as the design requires in AWS.
    ca_file: str | None = None

    def tls_kwargs(self) -> dict[str, str]:
        """Our side's TLS settings (app_settings) as psycopg2.connect arguments, for the
        baselines."""
        if self.ca_file is None:
            return {"sslmode": "disable"}
        return {"sslmode": "verify-full", "sslrootcert": self.ca_file}

    def admin_settings(self) -> Settings:
        return local_settings(
            host=self.host,
            port=self.port,
            dbname=self.name,
            user=self.superuser,
            password=self.superpassword,
        )

    def app_settings(self, **env: str) -> Settings:
        """The bench role's password login; `.to_env()` is what a child process reads."""
        return local_settings(
            host=self.host,
            port=self.port,
            dbname=self.name,
            user=BENCH_ROLE,
            password=self.app_password,
            **{**tls_env(self.ca_file), **env},
        )

    def connect_kwargs(self) -> dict[str, Any]:
        """psycopg2.connect arguments for the bench role: what a hand-written baseline uses."""
        return {
            "host": self.host,
            "port": self.port,
            "dbname": self.name,
            "user": BENCH_ROLE,
            "password": self.app_password,
            **self.tls_kwargs(),
        }

    def admin_connect(self, dbname: str | None = None) -> Any:
        return psycopg2.connect(
            host=self.host,
            port=self.port,
            dbname=dbname or self.name,
            user=self.superuser,
            password=self.superpassword,
            sslmode="disable",
        )


@contextmanager
def bench_database(
    host: str, port: int, superuser: str, password: str, ca_file: str | None = None
) -> Iterator[BenchDB]:
    """Create, migrate and seed a database for one benchmark run; drop it afterwards."""
    bdb = BenchDB(
        host,
        port,
        superuser,
        password,
        f"bench_{secrets.token_hex(4)}",
        secrets.token_urlsafe(16),
        ca_file,
    )
    admin = bdb.admin_connect("postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{bdb.name}"')
        migrate(bdb.admin_settings(), iam_user=BENCH_ROLE)
        set_password(bdb.admin_settings(), BENCH_ROLE, bdb.app_password)
        seed(bdb)
        yield bdb
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{bdb.name}" WITH (FORCE)')
        admin.close()


@contextmanager
def throwaway_bench_database(name: str) -> Iterator[BenchDB]:
    """A bench database in a cluster of its own, started for it and removed afterwards
    (the stand-alone scripts: `python -m bench.statement_timeout`, `bench.hot_updates`)."""
    repo = Path(__file__).resolve().parent.parent
    root = usable_root(repo / ".localpg" / f"bench-{name}-{os.getpid()}")
    cluster = LocalPostgres(root, free_port())
    try:
        cluster.start()
        ca = str(cluster.ca_file) if cluster.ca_file else None
        with bench_database(cluster.host, cluster.port, cluster.user, cluster.password, ca) as bdb:
            yield bdb
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def seed(bdb: BenchDB) -> None:
    conn = bdb.admin_connect()
    try:
        with conn, conn.cursor() as cur:
            psycopg2.extras.execute_values(
                cur,
                "INSERT INTO products (sku, name, price_cents, stock) VALUES %s",
                [(sku(i), f"Product {i}", 100 + i, START_STOCK) for i in range(PRODUCTS)],
            )
            psycopg2.extras.execute_values(
                cur,
                "INSERT INTO customers (email, name) VALUES %s",
                [(f"bench{i}@example.com", f"Customer {i}") for i in range(CUSTOMERS)],
            )
            cur.execute("ANALYZE")
    finally:
        conn.close()


def customer_ids(bdb: BenchDB) -> list[int]:
    conn = bdb.admin_connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT id FROM customers ORDER BY id")
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


# A side of a pair: run `n` operations, return each one's latency in seconds.
Side = Callable[[int], list[float]]


def alternate(ours: Side, baseline: Side, *, total: int, rounds: int) -> tuple[list[float], ...]:
    """Warm both sides up, then run `rounds` alternating rounds; per-op latencies of each."""
    return rotate([ours, baseline], total=total, rounds=rounds)


def rotate(sides: list[Side], *, total: int, rounds: int) -> tuple[list[float], ...]:
    """Warm every side up, then run `rounds` rounds, each starting one side later than the last.

    So drift (caches, autovacuum, the neighbours' load) hits every side alike.
    """
    per_round = max(1, total // rounds)
    warm = max(1, per_round // 5)
    for side in sides:
        side(warm)
    results: list[list[float]] = [[] for _ in sides]
    for r in range(rounds):
        for k in range(len(sides)):
            index = (r + k) % len(sides)
            results[index] += sides[index](per_round)
    return tuple(results)


def timed(op: Callable[[int], object], n: int) -> list[float]:
    """Latency of op(i) for i in range(n)."""
    out = []
    clock = time.perf_counter
    for i in range(n):
        start = clock()
        op(i)
        out.append(clock() - start)
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def rng(name: str) -> random.Random:
    """A seeded generator per workload: both sides see the same inputs."""
    return random.Random(name)
