"""`make run`: a throwaway local PostgreSQL, migrated and seeded, and the API on 127.0.0.1.

The cluster lives in .localpg/run (git-ignored; LOCALPG_RUN_DIR names another
folder) and is reused by the next run; a folder that will not start is
recreated. The API runs under gunicorn, as in the container, logged in as the
least-privilege application role with a password that is new every run.
Ctrl-C stops the API, then the database.

While it runs, the folder holds two owner-only files of `export` lines, `env`
(the application role) and `env.admin` (the superuser, for migrations), which
`make env` prints with fresh API tokens, so that another shell can reach what
this run serves: `eval "$(make -s env)"`. They are removed when the run stops.

With DB_AUTH=iam (`DB_AUTH=iam make run`) the API takes the production login
path instead: RDS IAM tokens, signed with an access key made for this run, and
checked by a local stand-in for RDS in front of the cluster (scripts/localiam).
No AWS account is involved.

    python -m scripts.run_local [--port 8000] [--dir .localpg/run]
    python -m scripts.run_local --env [--role app|admin] [--dir .localpg/run]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import IO, Any

import psycopg2
import psycopg2.extras
from psycopg2 import sql

from dataaccess import Database, Settings, services
from dataaccess.errors import AlreadyExistsError
from scripts.devdb import APP_ROLE, local_settings, migrate, set_password, superuser_settings
from scripts.localauth import LocalIssuer
from scripts.localiam import OTHER_AWS_CREDENTIALS, IamKey, LocalIamEndpoint, cluster_tls
from scripts.localpg import LocalPostgres, free_port, tls_env, usable_root, write_private

REPO = Path(__file__).resolve().parent.parent

DB_NAME = "inventory"
SEED_CUSTOMERS = [("ada@example.com", "Ada Lovelace"), ("alan@example.com", "Alan Turing")]
SEED_PRODUCTS = [
    ("WIDGET-1", "Widget", 250, 100),
    ("GADGET-1", "Gadget", 1999, 25),
    ("GIZMO-1", "Gizmo", 500, 3),
]
# The report function's default low-stock threshold (REPORT_LOW_STOCK_THRESHOLD in
# lambda/handler.py), for the banner to say which seeded product the report lists.
LOW_STOCK_THRESHOLD = 10
# DB_AUTH=iam: the region the local endpoint is in and the API signs for (no AWS is called).
IAM_REGION = "eu-west-1"
# The files `make env` prints, in the run folder while a run is up: role -> file name.
ENV_FILES = {"app": "env", "admin": "env.admin"}
_PID_LINE = re.compile(r"^# pid (\d+)$", re.M)


def default_dir() -> Path:
    """The run folder: LOCALPG_RUN_DIR, else .localpg/run in the checkout."""
    return Path(os.environ.get("LOCALPG_RUN_DIR") or REPO / ".localpg" / "run")


class StartError(RuntimeError):
    """The run cannot start; the message is one line that says what to do."""


class NotRunningError(RuntimeError):
    """No `make run` is serving from that folder; the message says so and what to do."""


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


@dataclass(frozen=True)
class Seeded:
    """The seeded customers and products as they are now: (id, email) and (sku, stock)."""

    customers: list[tuple[int, str]]
    products: list[tuple[str, int]]


def seeded(admin: Settings) -> Seeded:
    """The seeded customers and products, read back: ids, and stock after earlier orders."""
    conn = psycopg2.connect(
        host=admin.host,
        port=admin.port,
        dbname=admin.name,
        user=admin.user,
        password=admin.password,
    )
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(
                "SELECT id, email FROM customers WHERE email = ANY(%(emails)s) ORDER BY id",
                {"emails": [email for email, _ in SEED_CUSTOMERS]},
            )
            rows: list[dict[str, Any]] = cur.fetchall()  # type: ignore[assignment]
            customers = [(int(row["id"]), str(row["email"])) for row in rows]
            cur.execute(
                "SELECT sku, stock FROM products WHERE sku = ANY(%(skus)s)",
                {"skus": [sku for sku, *_ in SEED_PRODUCTS]},
            )
            rows = cur.fetchall()  # type: ignore[assignment]
            stock = {str(row["sku"]): int(row["stock"]) for row in rows}
    finally:
        conn.close()
    order = [sku for sku, *_ in SEED_PRODUCTS]
    return Seeded(customers, [(sku, stock[sku]) for sku in order if sku in stock])


def cluster_login(
    cluster: LocalPostgres, user: str, password: str, dbname: str = DB_NAME
) -> Settings:
    """`user`'s password login to the cluster itself, verify-full when the cluster has TLS."""
    return local_settings(
        host=cluster.host,
        port=cluster.port,
        dbname=dbname,
        user=user,
        password=password,
        **tls_env(cluster.ca_file),
    )


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


def iam_login(app: Settings, endpoint: LocalIamEndpoint, key: IamKey) -> dict[str, str]:
    """The API's DB_* and AWS_* variables for `app`'s role with IAM tokens checked by
    `endpoint` (which presents the cluster's certificate: the same TLS settings hold)."""
    tokens = replace(
        app, host=endpoint.host, port=endpoint.port, auth="iam", password=None, region=IAM_REGION
    )
    return {
        **tokens.to_env(),
        "AWS_REGION": IAM_REGION,
        **key.env(),  # the run's key signs, and nothing else is read
    }


def serve(
    port: int,
    login: dict[str, str],
    issuer: LocalIssuer,
    log: IO[str] | None = None,
) -> subprocess.Popen[bytes]:
    """gunicorn with the API, logging in as the app role with `login`'s DB_* variables."""
    inherited = dict(os.environ)
    if login["DB_AUTH"] == "iam":
        for name in OTHER_AWS_CREDENTIALS:
            inherited.pop(name, None)
    env = {
        **inherited,
        **issuer.env(),
        **login,
        "DB_APPLICATION_NAME": "api-local",
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "api/gunicorn.conf.py", "api:create_app()"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=None if log is None else subprocess.STDOUT,
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


# -- the port, and a run already up ---------------------------------------------


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether gunicorn could not bind `host:port` now (it sets SO_REUSEADDR, as this does)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def check_port(port: int) -> None:
    """StartError, in one line that names the port and PORT=, when the port cannot be served."""
    try:
        if not port_in_use(port):
            return
        why = "is in use (another make run?)"
    except OSError as exc:  # e.g. a port below 1024 without root
        why = f"cannot be used ({exc.strerror})"
    suggestion = next(
        (p for p in range(max(port + 1, 8000), min(port + 100, 65536)) if not port_in_use(p)),
        None,
    )
    raise StartError(
        f"port {port} on 127.0.0.1 {why}; serve on another one: "
        f"PORT={suggestion or free_port()} make run"
    )


def _running_pid(run_dir: Path) -> int | None:
    """The pid of the run serving from `run_dir`, if its env file is there and it lives."""
    try:
        found = _PID_LINE.search((run_dir / ENV_FILES["app"]).read_text())
    except FileNotFoundError:
        return None
    if found is None:
        return None
    pid = int(found.group(1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return pid


# -- the environment for other shells (make env) ---------------------------------


def _login_env(
    cluster: LocalPostgres, user: str, password: str, dbname: str = DB_NAME
) -> dict[str, str]:
    """DB_* (dataaccess, alembic) and PG* (psql, libpq) for `user` on the cluster itself."""
    login = cluster_login(cluster, user, password, dbname)
    pg = {
        "PGHOST": login.host,
        "PGPORT": str(login.port),
        "PGDATABASE": login.name,
        "PGUSER": user,
        "PGPASSWORD": password,
        "PGSSLMODE": login.sslmode,
    }
    if login.sslrootcert is not None:
        pg["PGSSLROOTCERT"] = login.sslrootcert
    return login.to_env() | pg


def write_env_files(run: LocalRun) -> None:
    """The owner-only `export` files `make env` prints, one per role."""
    shared = {"API_URL": run.base, "CUSTOMER_ID": str(run.customer_id)}
    logins = {
        "app": _login_env(run.cluster, APP_ROLE, run.password),
        "admin": _login_env(run.cluster, run.cluster.user, run.cluster.password),
    }
    for role, name in ENV_FILES.items():
        values = {**shared, **logins[role]}
        lines = [
            "# Written by make run (scripts/run_local.py) for make env; removed when it stops.",
            f"# pid {os.getpid()}",
            *(f"export {key}={shlex.quote(value)}" for key, value in values.items()),
        ]
        write_private(run.run_dir / name, "\n".join(lines) + "\n")


def remove_env_files(run_dir: Path) -> None:
    for name in ENV_FILES.values():
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()


def read_env(run_dir: Path, role: str = "app") -> dict[str, str]:
    """The variables of the run serving from `run_dir` for `role`; NotRunningError if none."""
    if _running_pid(run_dir) is None:
        raise NotRunningError(
            f"make run is not running (nothing serves from {run_dir}): start it in "
            "another terminal, wait for 'API ready', then run this again"
        )
    values: dict[str, str] = {}
    for line in (run_dir / ENV_FILES[role]).read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            (values[key],) = shlex.split(value)  # one word: written by shlex.quote
    return values


def env_text(run_dir: Path, role: str = "app") -> str:
    """What `make env` prints: the run's `export` lines, and API tokens minted now."""
    values = read_env(run_dir, role)
    issuer = LocalIssuer(run_dir.resolve() / "issuer")
    values["TOKEN"] = issuer.token(admin=True)
    values["CUSTOMER_TOKEN"] = issuer.token(customer_id=int(values["CUSTOMER_ID"]))
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in values.items())


# -- one run ----------------------------------------------------------------------


@dataclass
class LocalRun:
    """A running `make run`: the cluster, the API's process and what reaches them."""

    run_dir: Path
    base: str
    cluster: LocalPostgres
    admin: Settings
    password: str  # the app role's, new this run
    issuer: LocalIssuer
    api: subprocess.Popen[bytes]
    customer_id: int
    iam: LocalIamEndpoint | None = None


@contextlib.contextmanager
def local_run(
    run_dir: Path, port: int, *, auth: str = "password", log: IO[str] | None = None
) -> Iterator[LocalRun]:
    """Start the cluster, migrate and seed it, serve the API; stop both on the way out.

    Raises StartError (before starting anything) when the port is taken or a run
    already serves from `run_dir`, and when the API does not become ready.
    """
    run_dir = run_dir.resolve()
    pid = _running_pid(run_dir)
    if pid is not None:
        raise StartError(
            f"make run is already running from {run_dir} (pid {pid}); stop it first, "
            "or give this one its own folder: LOCALPG_RUN_DIR=<folder> make run"
        )
    check_port(port)
    cluster = start_cluster(run_dir)
    api: subprocess.Popen[bytes] | None = None
    iam: LocalIamEndpoint | None = None
    try:
        admin, password = provision(
            cluster, DB_NAME, customers=SEED_CUSTOMERS, products=SEED_PRODUCTS
        )
        issuer = LocalIssuer(run_dir / "issuer")
        app = cluster_login(cluster, APP_ROLE, password)
        login = app.to_env()
        if auth == "iam":
            iam, key = start_iam_endpoint(cluster, password)
            login = iam_login(app, iam, key)
        api = serve(port, login, issuer, log)
        base = f"http://127.0.0.1:{port}"
        if not wait_ready(f"{base}/readyz", api):
            raise StartError(f"the API did not become ready on {base}; see the log above")
        customers = seeded(admin).customers
        run = LocalRun(
            run_dir=run_dir,
            base=base,
            cluster=cluster,
            admin=admin,
            password=password,
            issuer=issuer,
            api=api,
            customer_id=customers[0][0] if customers else 1,
            iam=iam,
        )
        write_env_files(run)
        yield run
    finally:
        remove_env_files(run_dir)
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
        if cluster.root != run_dir:
            # A temporary fallback folder (checkout not reachable by the server's
            # OS user): nothing will reuse it, so do not leave it behind.
            shutil.rmtree(cluster.root, ignore_errors=True)


def _env_command(run_dir: Path) -> str:
    if run_dir == (REPO / ".localpg" / "run").resolve():
        return 'eval "$(make -s env)"'
    return f'eval "$(LOCALPG_RUN_DIR={shlex.quote(str(run_dir))} make -s env)"'


def banner(run: LocalRun) -> str:
    base, customer_id = run.base, run.customer_id
    admin = run.issuer.token(admin=True)
    customer = run.issuer.token(customer_id=customer_id)
    now = seeded(run.admin)
    names = {sku: name for sku, name, *_ in SEED_PRODUCTS}
    products = "\n".join(
        f"    {sku:<9} {names[sku]:<7} stock {stock}"
        + (f"  (low: under {LOW_STOCK_THRESHOLD})" if stock < LOW_STOCK_THRESHOLD else "")
        for sku, stock in now.products
    )
    customers = ", ".join(f"{cid} {email}" for cid, email in now.customers)
    login = ""
    if run.iam is not None:
        iam = run.iam
        tls = "TLS required" if iam.requires_tls else "no TLS: the cluster has none"
        login = f"""
Database login: RDS IAM tokens, as in AWS. The API signs them with an access key made
for this run; a local stand-in for RDS at {iam.endpoint} ({iam.region}, {tls}) checks
each one and logs why it refuses one.
"""
    # A key of its own each run: the same key again replays that order, even a cancelled one.
    key = f"demo-{secrets.token_hex(4)}"
    return f"""
API ready on {base}   (Ctrl-C stops the API and the database)
{login}
Seeded, and kept between runs (creating these again is a 409):
  customers: {customers}
  products:
{products}

Tokens from the local issuer, valid 12 hours (admin: the catalog and any customer;
customer: customer {customer_id} only):

  export TOKEN={admin}
  export CUSTOMER_TOKEN={customer}

  curl -s {base}/products -H "Authorization: Bearer $TOKEN"
  curl -s '{base}/products?stock_below={LOW_STOCK_THRESHOLD}' -H "Authorization: Bearer $TOKEN"
  curl -s -X POST {base}/orders -H "Authorization: Bearer $CUSTOMER_TOKEN" \\
       -H 'Content-Type: application/json' -H 'Idempotency-Key: {key}' \\
       -d '{{"customer_id": {customer_id}, "lines": [{{"sku": "WIDGET-1", "quantity": 2}}]}}'

In another shell, this sets those tokens, API_URL, and the DB_* and PG* variables of
this database as {APP_ROLE} (ROLE=admin: as the superuser), for the package, psql,
alembic and make invoke HANDLER=report:

  {_env_command(run.run_dir)}

Browse the API: {base}/docs  (Authorize: paste $TOKEN)
OpenAPI document: {base}/openapi.json
"""


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--dir", type=Path, default=None, help="the run folder")
    parser.add_argument(
        "--auth",
        choices=["password", "iam"],
        # DB_AUTH=iam make run; any other DB_AUTH in the shell leaves the default alone.
        default="iam" if os.environ.get("DB_AUTH", "").strip().lower() == "iam" else "password",
        help="how the API logs in: its role's password (default), or IAM tokens (DB_AUTH=iam)",
    )
    parser.add_argument(
        "--env", action="store_true", help="print the running run's export lines, and exit"
    )
    parser.add_argument("--role", choices=sorted(ENV_FILES), default="app", help="with --env")
    args = parser.parse_args(argv)
    run_dir: Path = (args.dir or default_dir()).resolve()
    if args.env:
        try:
            sys.stdout.write(env_text(run_dir, args.role))
        except NotRunningError as exc:
            print(f"make env: {exc}", file=sys.stderr)
            return 1
        return 0
    # SIGTERM (e.g. from a supervisor or a test) cleans up like Ctrl-C does; and
    # Ctrl-C works even when started from a shell that ignores SIGINT (`cmd &`).
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with local_run(run_dir, args.port, auth=args.auth) as run:
            print(banner(run), flush=True)
            try:
                return run.api.wait()
            except KeyboardInterrupt:
                print("\nstopping the API and the database...", file=sys.stderr)
                return 0
    except StartError as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopped while starting", file=sys.stderr)
        return 0


if __name__ == "__main__":
    sys.exit(main())
