"""`make run`: a throwaway local PostgreSQL, migrated and seeded, and the API on 127.0.0.1.

The cluster lives in .localpg/run (git-ignored) and is reused by the next run;
a folder that will not start is recreated. The API runs under gunicorn, as in
the container, logged in as the least-privilege application role with a
password that is new every run. Ctrl-C stops the API, then the database.

With DB_AUTH=iam (`DB_AUTH=iam make run`) the API takes the production login
path instead: RDS IAM tokens, signed with an access key made for this run, and
checked by a local stand-in for RDS in front of the cluster (scripts/localiam).
No AWS account is involved.

    python -m scripts.run_local [--port 8000] [--dir .localpg/run]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
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
from scripts.localiam import OTHER_AWS_CREDENTIALS, IamKey, LocalIamEndpoint, cluster_tls
from scripts.localpg import LocalPostgres, free_port, tls_env, usable_root

REPO = Path(__file__).resolve().parent.parent

DB_NAME = "inventory"
SEED_CUSTOMERS = [("ada@example.com", "Ada Lovelace"), ("alan@example.com", "Alan Turing")]
SEED_PRODUCTS = [
    ("WIDGET-1", "Widget", 250, 100),
    ("GADGET-1", "Gadget", 1999, 25),
    ("GIZMO-1", "Gizmo", 500, 3),
]
# DB_AUTH=iam: the region the local endpoint is in and the API signs for (no AWS is called).
IAM_REGION = "eu-west-1"


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


def password_login(cluster: LocalPostgres, password: str) -> dict[str, str]:
    """The API's DB_* login variables for the cluster itself, with the app role's password."""
    return {
        "DB_HOST": cluster.host,
        "DB_PORT": str(cluster.port),
        "DB_AUTH": "password",
        "DB_PASSWORD": password,
    }


def start_iam_endpoint(cluster: LocalPostgres, password: str) -> tuple[LocalIamEndpoint, IamKey]:
    """A local stand-in for RDS in front of `cluster`, and the one access key it trusts.

    The endpoint logs the app role in to the cluster with its local `password`
    once a token checks out; the key is new every run and may connect as that role only.
    """
    key = IamKey.generate(db_users=frozenset({APP_ROLE}))
    endpoint = LocalIamEndpoint(
        upstream=(cluster.host, cluster.port),
        logins={APP_ROLE: password},
        keys=[key],
        region=IAM_REGION,
        tls=cluster_tls(cluster.ca_file),
    ).start()
    # Refusals (and why) and accepted logins on stderr, next to the API's log.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("local RDS endpoint: %(message)s"))
    logger = logging.getLogger("scripts.localiam")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return endpoint, key


def iam_login(endpoint: LocalIamEndpoint, key: IamKey) -> dict[str, str]:
    """The API's DB_* and AWS_* variables for IAM tokens checked by `endpoint`."""
    return {
        "DB_HOST": endpoint.host,
        "DB_PORT": str(endpoint.port),
        "DB_AUTH": "iam",
        "DB_REGION": IAM_REGION,
        "AWS_REGION": IAM_REGION,
        **key.env(),  # the run's key signs, and nothing else is read
    }


def serve(
    cluster: LocalPostgres, port: int, login: dict[str, str], issuer: LocalIssuer
) -> subprocess.Popen[bytes]:
    """gunicorn with the API, logging in as the app role with `login`'s DB_* variables."""
    inherited = dict(os.environ)
    if login["DB_AUTH"] == "iam":
        for name in OTHER_AWS_CREDENTIALS:
            inherited.pop(name, None)
    env = {
        **inherited,
        **issuer.env(),
        "DB_NAME": DB_NAME,
        "DB_USER": APP_ROLE,
        **login,
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


def banner(
    base: str, customer_id: int, issuer: LocalIssuer, iam: LocalIamEndpoint | None = None
) -> str:
    admin = issuer.token(admin=True)
    customer = issuer.token(customer_id=customer_id)
    login = ""
    if iam is not None:
        tls = "TLS required" if iam.requires_tls else "no TLS: the cluster has none"
        login = f"""
Database login: RDS IAM tokens, as in AWS. The API signs them with an access key made
for this run; a local stand-in for RDS at {iam.endpoint} ({iam.region}, {tls}) checks
each one and logs why it refuses one.
"""
    return f"""
API ready on {base}   (Ctrl-C stops the API and the database)
{login}
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
    parser.add_argument(
        "--auth",
        choices=["password", "iam"],
        # DB_AUTH=iam make run; any other DB_AUTH in the shell leaves the default alone.
        default="iam" if os.environ.get("DB_AUTH", "").strip().lower() == "iam" else "password",
        help="how the API logs in: its role's password (default), or IAM tokens (DB_AUTH=iam)",
    )
    args = parser.parse_args(argv)
    # SIGTERM (e.g. from a supervisor or a test) cleans up like Ctrl-C does; and
    # Ctrl-C works even when started from a shell that ignores SIGINT (`cmd &`).
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    cluster = start_cluster(args.dir)
    api: subprocess.Popen[bytes] | None = None
    iam: LocalIamEndpoint | None = None
    try:
        admin, password = provision(
            cluster, DB_NAME, customers=SEED_CUSTOMERS, products=SEED_PRODUCTS
        )
        issuer = LocalIssuer(args.dir.resolve() / "issuer")
        login = password_login(cluster, password)
        if args.auth == "iam":
            iam, key = start_iam_endpoint(cluster, password)
            login = iam_login(iam, key)
        api = serve(cluster, args.port, login, issuer)
        base = f"http://127.0.0.1:{args.port}"
        if not wait_ready(f"{base}/readyz", api):
            print(f"the API did not become ready on {base}; see the log above", file=sys.stderr)
            return 1
        print(banner(base, first_customer_id(admin), issuer, iam), flush=True)
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
        if iam is not None:
            iam.close()
        cluster.stop()
        if cluster.root != args.dir.resolve():
            # A temporary fallback folder (checkout not reachable by the server's
            # OS user): nothing will reuse it, so do not leave it behind.
            shutil.rmtree(cluster.root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
