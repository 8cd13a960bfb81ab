"""End to end: the one-command run (scripts/run_local.py, as `make run` starts it), free port."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from api_helpers import REPO

from scripts.localpg import free_port


def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(  # noqa: S310 (loopback)
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return response.status, json.loads(response.read())


def get(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def exported(output: str, name: str) -> str:
    """The value the banner's `export NAME=...` line gives."""
    (line,) = [x for x in output.splitlines() if x.strip().startswith(f"export {name}=")]
    return line.split("=", 1)[1].strip()


@pytest.fixture
def run_dir() -> Path:
    """A cluster folder of its own, so this test never touches `make run`'s."""
    path = REPO / ".localpg" / f"e2e-{os.getpid()}-{free_port()}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_one_command_run_serves_orders_and_stops_cleanly(run_dir):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.run_local", "--port", str(port), "--dir", str(run_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # What a user waits for: the banner with the URL and the curl examples, printed
    # once the API answers. Polling /readyz ourselves could race ahead of it.
    lines: list[str] = []
    ready = threading.Event()

    def read_output() -> None:
        for output_line in proc.stdout:
            lines.append(output_line)
            if "API ready on" in output_line:
                ready.set()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    base = f"http://127.0.0.1:{port}"
    try:
        assert ready.wait(timeout=120), "".join(lines)
        threading.Event().wait(0.2)  # the rest of the banner, printed with its first line
        token, customer_token = (
            exported("".join(lines), "TOKEN"),
            exported("".join(lines), "CUSTOMER_TOKEN"),
        )
        products = get(f"{base}/products", token)["items"]
        widget = next(p for p in products if p["sku"] == "WIDGET-1")
        customer = 1
        line = {"customer_id": customer, "lines": [{"sku": "WIDGET-1", "quantity": 2}]}
        as_customer = {"Authorization": f"Bearer {customer_token}", "Idempotency-Key": "e2e-1"}
        status, first = post(f"{base}/orders", line, as_customer)
        assert status == 201
        status, again = post(f"{base}/orders", line, as_customer)
        assert (status, again["id"]) == (201, first["id"])
        assert get(f"{base}/products/WIDGET-1", token)["stock"] == widget["stock"] - 2
        assert get(f"{base}/orders/{first['id']}", customer_token)["status"] == "placed"
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        proc.wait(timeout=60)
        reader.join(timeout=10)
        proc.stdout.close()
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert f"curl -s {base}/products" in output
    assert not (run_dir / "data" / "postmaster.pid").exists(), "the database was not stopped"
