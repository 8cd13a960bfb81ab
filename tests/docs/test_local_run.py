"""What `make run` tells a newcomer, `make env`, a busy port, and `make invoke`'s database."""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from scripts.invoke_local import choose_database, report_event_now
from scripts.localpg import free_port
from scripts.run_local import (
    ENV_FILES,
    SEED_CUSTOMERS,
    SEED_PRODUCTS,
    LocalRun,
    NotRunningError,
    banner,
    read_env,
)
from tests.lambda_.helpers import load_event

REPO = Path(__file__).resolve().parents[2]


def make_env(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    return subprocess.run(
        ["make", "-s", "env", *args],
        cwd=REPO,
        env={**env, "LOCALPG_RUN_DIR": str(run_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def exports(text: str) -> dict[str, str]:
    return dict(re.findall(r"^export (\w+)=(.*)$", text, re.M))


# -- the banner --------------------------------------------------------------------


def test_the_banner_names_what_is_seeded_and_where_to_go_next(served: LocalRun):
    text = banner(served)

    for email, _ in SEED_CUSTOMERS:
        assert email in text
    for sku, *_ in SEED_PRODUCTS:
        assert sku in text
    (low,) = [line for line in text.splitlines() if "low:" in line]
    assert "GIZMO-1" in low
    assert f"{served.base}/docs" in text
    assert "make -s env" in text
    assert text.rstrip().splitlines()[-1].startswith("OpenAPI document:")


def test_the_banner_s_order_example_has_a_new_key_each_run(served: LocalRun):
    keys = {re.search(r"Idempotency-Key: ([\w-]+)", banner(served))[1] for _ in range(2)}

    assert len(keys) == 2


# -- make env ----------------------------------------------------------------------


def test_make_env_reaches_the_database_as_the_app_role_over_verified_tls(served: LocalRun):
    result = make_env(served.run_dir)

    assert result.returncode == 0, result.stderr
    values = exports(result.stdout)
    assert values["DB_USER"] == values["PGUSER"] == "app_iam"
    assert values["API_URL"] == served.base
    assert {"TOKEN", "CUSTOMER_TOKEN"} <= values.keys()
    if served.cluster.ca_file is not None:
        assert values["DB_SSLMODE"] == "verify-full"
        assert values["DB_SSLROOTCERT"] == str(served.cluster.ca_file)
    conn = psycopg2.connect(
        host=values["DB_HOST"],
        port=values["DB_PORT"],
        dbname=values["DB_NAME"],
        user=values["DB_USER"],
        password=values["DB_PASSWORD"],
        sslmode=values["DB_SSLMODE"],
        sslrootcert=values.get("DB_SSLROOTCERT"),
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user, count(*) AS products FROM products")
            assert cur.fetchone() == ("app_iam", len(SEED_PRODUCTS))
    finally:
        conn.close()


def test_make_env_role_admin_is_the_superuser(served: LocalRun):
    result = make_env(served.run_dir, "ROLE=admin")

    assert result.returncode == 0, result.stderr
    assert exports(result.stdout)["DB_USER"] == served.cluster.user


def test_the_env_files_are_the_owner_s_only(served: LocalRun):
    for name in ENV_FILES.values():
        mode = stat.S_IMODE((served.run_dir / name).stat().st_mode)
        assert mode == 0o600, name


def test_make_env_without_a_run_says_to_start_one(tmp_path: Path):
    result = make_env(tmp_path)

    assert result.returncode != 0
    assert result.stdout == ""
    assert "make run is not running" in result.stderr


def test_an_env_file_left_by_a_killed_run_is_not_a_run(tmp_path: Path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / ENV_FILES["app"]).write_text(f"# pid {gone.pid}\nexport DB_HOST=x\n")

    with pytest.raises(NotRunningError, match="not running"):
        read_env(tmp_path)


# -- starting -------------------------------------------------------------------------


def run_local(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripts.run_local", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_busy_port_is_one_line_naming_it_and_port_equals(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_local("--port", str(port), "--dir", str(tmp_path / "run"))

    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert f"port {port}" in line
    assert re.search(r"PORT=\d+ make run", line)
    assert not (tmp_path / "run" / "data").exists()  # nothing was started


def test_a_second_run_in_the_same_folder_is_refused(served: LocalRun):
    result = run_local("--port", str(free_port()), "--dir", str(served.run_dir))

    assert result.returncode == 1
    assert "already running" in result.stderr
    assert (served.run_dir / ENV_FILES["app"]).exists()  # the first run is untouched


# -- make invoke -------------------------------------------------------------------------


def test_the_sample_report_events_end_now():
    now = dt.datetime(2030, 1, 2, 3, 4, 5, 600_000, tzinfo=dt.UTC)

    schedule = report_event_now(load_event("schedule_report.json"), now)
    direct = report_event_now(load_event("report_direct.json"), now)

    assert schedule["time"] == "2030-01-02T03:04:06Z"  # rounded up: now is inside
    assert direct["until"] == "2030-01-02T03:04:06Z"
    assert direct["since"] == "2029-12-30T03:04:06Z"  # the recorded three days


def test_invoke_uses_make_run_s_database_for_the_report_only(served: LocalRun, tmp_path: Path):
    assert choose_database("auto", "report", served.run_dir)["DB_PORT"] == str(served.cluster.port)
    assert choose_database("auto", "stock_events", served.run_dir) is None
    assert choose_database("own", "report", served.run_dir) is None
    assert choose_database("auto", "report", tmp_path) is None
    with pytest.raises(NotRunningError):
        choose_database("run", "stock_events", tmp_path)
