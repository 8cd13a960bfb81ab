"""`make run`: a throwaway local PostgreSQL, migrated and seeded, and the API on 127.0.0.1.

The cluster lives in .localpg/run (git-ignored) and is reused by the next run;
a folder that will not start is recreated. The API runs under gunicorn, as in
the container, logged in as the least-privilege application role with a
password that is new every run. Ctrl-C stops the API, then the database.

    python -m scripts.run_local [--port 8000] [--dir .localpg/run]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import psycopg2
from psycopg2 import sql

from dataaccess import Database, Settings, services
from dataaccess.errors import AlreadyExistsError
from scripts.devdb import APP_ROLE, migrate, set_password, superuser_settings
from scripts.localauth import LocalIssuer
from scripts.localpg import LocalPostgres, free_port, tls_env, usable_root

REPO = Path(__file__).resolve().parent.parent

DB_NAME = "inventory"
SEED_CUSTOMERS = [("ada@example.com", "Ada Lovelace"), ("alan@example.com", "Alan Turing")]
SEED_PRODUCTS = [
    ("WIDGET-1", "Widget", 250, 100),
    ("GADGET-1", "Gadget", 1999, 25),
    ("GIZMO-1", "Gizmo", 500, 3),
]


def start_cluster(root: Path) -> LocalPostgres:
    """Start the cluster in `root`; recreate the folder once if it will not start."""
    cluster = LocalPostgres(usable_root(root), free_port())
    try:
        return cluster.start()
    except RuntimeError as exc:
        print(f"note: the cluster in {cluster.root} did not start ({exc}); recreating it")
        cluster.stop()
        shutil.rmtree(cluster.root / "data", ignore_errors=True)
        return cluster.start()


def ensure_database(cluster: LocalPostgres, name: str) -> None:
    conn = psycopg2.connect(cluster.dsn())
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()


def seed(
    admin: Settings,
    *,
    customers: Sequence[tuple[str, str]] = (),
    products: Sequence[tuple[str, str, int, int]] = (),
) -> None:
    """Create these customers and products; what exists already is left as it is."""
    database = Database.from_settings(admin)
    try:
        for email, name in customers:
            with database.unit_of_work() as uow, contextlib.suppress(AlreadyExistsError):
                services.create_customer(uow, email=email, name=name)
        for sku, name, price, stock in products:
            with database.unit_of_work() as uow, contextlib.suppress(AlreadyExistsError):
                services.create_product(uow, sku=sku, name=name, price_cents=price, stock=stock)
    finally:
        database.dispose()


def provision(
    cluster: LocalPostgres,
    name: str,
    *,
    customers: Sequence[tuple[str, str]] = (),
    products: Sequence[tuple[str, str, int, int]] = (),
) -> tuple[Settings, str]:
    """Create database `name` if missing, migrate and seed it, give the app role a new password.

    Returns the admin (migration) settings and the app role's password.
    """
    ensure_database(cluster, name)
    admin = superuser_settings(cluster, name)
    migrate(admin)
    seed(admin, customers=customers, products=products)
    password = secrets.token_urlsafe(18)
    set_password(admin, APP_ROLE, password)
    return admin, password


def first_customer_id(admin: Settings) -> int:
    conn = psycopg2.connect(
        host=admin.host,
        port=admin.port,
        dbname=admin.name,
        user=admin.user,
        password=admin.password,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT min(id) FROM customers")
            row = cur.fetchone()
            return int(row[0]) if row and row[0] is not None else 1
    finally:
        conn.close()


def serve(
    cluster: LocalPostgres, port: int, password: str, issuer: LocalIssuer
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **issuer.env(),
        "DB_HOST": cluster.host,
        "DB_PORT": str(cluster.port),
        "DB_NAME": DB_NAME,
        "DB_USER": APP_ROLE,
        "DB_AUTH": "password",
        "DB_PASSWORD": password,
        **tls_env(cluster.ca_file),
        "DB_APPLICATION_NAME": "api-local",
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "api/gunicorn.conf.py", "api:create_app()"],
        cwd=REPO,
        env=env,
    )


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def banner(base: str, customer_id: int, issuer: LocalIssuer) -> str:
    admin = issuer.token(admin=True)
    customer = issuer.token(customer_id=customer_id)
    return f"""
API ready on {base}   (Ctrl-C stops the API and the database)

Tokens from the local issuer, valid 12 hours (admin: the catalog and any customer;
customer: customer {customer_id} only):

  export TOKEN={admin}
  export CUSTOMER_TOKEN={customer}

  curl -s {base}/products -H "Authorization: Bearer $TOKEN"
  curl -s -X POST {base}/orders -H "Authorization: Bearer $CUSTOMER_TOKEN" \\
       -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1' \\
       -d '{{"customer_id": {customer_id}, "lines": [{{"sku": "WIDGET-1", "quantity": 2}}]}}'

OpenAPI document: {base}/openapi.json
"""


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--dir", type=Path, default=REPO / ".localpg" / "run")
    args = parser.parse_args(argv)
    # SIGTERM (e.g. from a supervisor or a test) cleans up like Ctrl-C does; and
    # Ctrl-C works even when started from a shell that ignores SIGINT (`cmd &`).
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    cluster = start_cluster(args.dir)
    api: subprocess.Popen[bytes] | None = None
    try:
        admin, password = provision(
            cluster, DB_NAME, customers=SEED_CUSTOMERS, products=SEED_PRODUCTS
        )
        issuer = LocalIssuer(args.dir.resolve() / "issuer")
        api = serve(cluster, args.port, password, issuer)
        base = f"http://127.0.0.1:{args.port}"
        if not wait_ready(f"{base}/readyz", api):
            print(f"the API did not become ready on {base}; see the log above", file=sys.stderr)
            return 1
        print(banner(base, first_customer_id(admin), issuer), flush=True)
        return api.wait()
    except KeyboardInterrupt:
        print("\nstopping the API and the database...", file=sys.stderr)
        return 0
    finally:
        if api is not None and api.poll() is None:
            api.terminate()  # gunicorn: graceful stop
            try:
                api.wait(timeout=30)
            except subprocess.TimeoutExpired:
                api.kill()
                api.wait()
        cluster.stop()
        if cluster.root != args.dir.resolve():
            # A temporary fallback folder (checkout not reachable by the server's
            # OS user): nothing will reuse it, so do not leave it behind.
            shutil.rmtree(cluster.root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
