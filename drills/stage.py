"""The stage every drill plays on: a replicated pair behind an endpoint, a migrated and
seeded database, the API under gunicorn, and checks of what a fault may not lose."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import psycopg2

from dataaccess import Settings
from drills.faults import ReplicatedPair, TcpForwarder
from scripts.devdb import APP_ROLE, local_settings, superuser_settings
from scripts.localauth import LocalIssuer
from scripts.localpg import LocalPostgres, free_port, usable_root
from scripts.run_local import provision, wait_ready

REPO = Path(__file__).resolve().parent.parent
DB_NAME = "drills"
START_STOCK = 1_000_000
PRODUCTS = [(f"DRILL-{i}", f"Drill product {i}", 100 + i, START_STOCK) for i in range(4)]
SKUS = [sku for sku, *_ in PRODUCTS]
CUSTOMERS = [("drill@example.com", "Drill Customer")]


@dataclass
class Stage:
    """A pair, its endpoint (the forwarder), and the app role's password."""

    pair: ReplicatedPair
    endpoint: TcpForwarder
    app_password: str
    root: Path
    logs: list[Path] = field(default_factory=list)
    # Every password, token and secret value the stage handed out: D8 greps the logs for them.
    secrets: set[str] = field(default_factory=set)
    _open: list[IO[str]] = field(default_factory=list)
    issuer: LocalIssuer = field(init=False)

    def __post_init__(self) -> None:
        self.issuer = LocalIssuer(self.root / "issuer")
        self.admin_token = self.issuer.token(admin=True)
        self.secrets.add(self.admin_token)

    @property
    def writer(self) -> LocalPostgres:
        """The server that is the writer now (the standby once promoted)."""
        return self.pair.standby if self.pair.promoted else self.pair.primary

    def app_env(self, **overrides: str) -> dict[str, str]:
        """DB_* for the least-privilege role, through the endpoint, as a deploy sets them."""
        login = local_settings(
            host="127.0.0.1",
            port=self.endpoint.port,
            dbname=DB_NAME,
            user=APP_ROLE,
            password=self.app_password,
        )
        return {**replace(login, application_name="drill").to_env(), **overrides}

    def admin_settings(self) -> Settings:
        """Superuser Settings straight to the writer (not through the endpoint)."""
        return superuser_settings(self.writer, DB_NAME)

    def admin(self, server: LocalPostgres | None = None) -> Any:
        """A superuser psycopg2 connection straight to `server` (default: the writer now)."""
        server = server or self.writer
        conn = psycopg2.connect(server.dsn(DB_NAME))
        conn.autocommit = True
        return conn

    def query(
        self, sql: str, params: tuple[Any, ...] = (), server: LocalPostgres | None = None
    ) -> list[tuple[Any, ...]]:
        conn = self.admin(server)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        finally:
            conn.close()

    def app_sessions(self, server: LocalPostgres) -> int:
        """Sessions of the app role on `server` (0 when it is down)."""
        try:
            rows = self.query(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (APP_ROLE,), server
            )
        except psycopg2.OperationalError:
            return 0
        return int(rows[0][0])

    def log_file(self, name: str) -> Path:
        """A file in the stage's folder for one process's output (D8 reads them all)."""
        path = self.root / f"{name}.log"
        self.logs.append(path)
        return path

    def open_log(self, name: str) -> IO[str]:
        """`log_file`, opened for appending; closed when the stage ends."""
        handle = self.log_file(name).open("a")
        self._open.append(handle)
        return handle

    @contextmanager
    def api(self, **env: str) -> Iterator[str]:
        """Serve the API under gunicorn on the endpoint; yield its base URL."""
        port = free_port()
        log = self.log_file(f"api-{port}").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "api/gunicorn.conf.py", "api:create_app()"],
            cwd=REPO,
            env={
                **os.environ,
                **self.issuer.env(),
                **self.app_env(**env),
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "WEB_CONCURRENCY": "2",
                "GUNICORN_THREADS": "4",
                "LOG_LEVEL": "INFO",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            if not wait_ready(f"{base}/readyz", proc):
                raise RuntimeError(f"the API did not start; see {log.name}")
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


@contextmanager
def stage() -> Iterator[Stage]:
    """A fresh replicated pair with the drill database, torn down afterwards."""
    # Inside the checkout's git-ignored .localpg, like the other throwaway clusters.
    root = usable_root(REPO / ".localpg" / f"drills-{os.getpid()}-{secrets.token_hex(3)}")
    pair = ReplicatedPair(root)
    try:
        pair.start()
        _, password = provision(pair.primary, DB_NAME, customers=CUSTOMERS, products=PRODUCTS)
        with TcpForwarder(pair.primary.port) as endpoint:
            st = Stage(pair, endpoint, password, root, secrets={password, pair.primary.password})
            # This process's own log records (the Lambda handler's dataaccess, the drills').
            records = logging.FileHandler(st.log_file("in-process"))
            records.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
            )
            root_logger = logging.getLogger()
            previous_level = root_logger.level
            root_logger.addHandler(records)
            root_logger.setLevel(logging.INFO)
            try:
                yield st
            finally:
                root_logger.removeHandler(records)
                root_logger.setLevel(previous_level)
                records.close()
                for handle in st._open:
                    handle.close()
    finally:
        pair.stop()
        shutil.rmtree(root, ignore_errors=True)


def customer_id(st: Stage) -> int:
    return int(st.query("SELECT min(id) FROM customers")[0][0])


# -- what a fault may not lose -----------------------------------------------------


def lost_orders(st: Stage, acknowledged: dict[str, int]) -> int:
    """Acknowledged orders (idempotency key -> id) missing from the writer now."""
    if not acknowledged:
        return 0
    rows = st.query("SELECT id FROM orders WHERE id = ANY(%s)", (list(acknowledged.values()),))
    return len(acknowledged) - len(rows)


def lost_events(st: Stage, acknowledged: set[str]) -> int:
    """Acknowledged stock events missing from the writer's ledger."""
    if not acknowledged:
        return 0
    rows = st.query(
        "SELECT event_id FROM stock_events WHERE event_id = ANY(%s)", (list(acknowledged),)
    )
    return len(acknowledged) - len(rows)


def oversold(st: Stage) -> int:
    """Products whose stock is negative or does not balance: start + events - placed orders."""
    rows = st.query(
        """
        SELECT p.sku, p.stock,
               coalesce((SELECT sum(e.delta) FROM stock_events e WHERE e.product_id = p.id), 0)
                 AS moved,
               coalesce((SELECT sum(l.quantity) FROM order_lines l
                         JOIN orders o ON o.id = l.order_id
                         WHERE l.product_id = p.id AND o.status = 'placed'), 0) AS sold
        FROM products p WHERE p.sku = ANY(%s)
        """,
        (SKUS,),
    )
    return sum(
        1 for _, stock, moved, sold in rows if stock < 0 or stock != START_STOCK + moved - sold
    )


def wait_until(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
