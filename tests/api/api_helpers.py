"""Small helpers shared by the API tests."""

from __future__ import annotations

import secrets
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

PROBLEM_JSON = "application/problem+json"
REPO = Path(__file__).resolve().parents[2]


def assert_problem(response, status: int) -> dict:
    """The response is problem+json with the given status and the RFC 9457 members."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM_JSON
    body = response.get_json(force=True)
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    return body


def new_sku(prefix: str = "SKU") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def make_customer(client) -> int:
    response = client.post(
        "/customers", json={"email": f"c-{secrets.token_hex(4)}@example.com", "name": "C"}
    )
    assert response.status_code == 201, response.json
    return response.json["id"]


def make_product(client, *, stock: int = 10, price_cents: int = 100, sku: str | None = None) -> str:
    sku = sku or new_sku()
    response = client.post(
        "/products", json={"sku": sku, "name": "Thing", "price_cents": price_cents, "stock": stock}
    )
    assert response.status_code == 201, response.json
    return sku


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Poll `url` until it answers 200; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{url} not ready after {timeout} s")
