"""Slow clients cannot starve gunicorn: bodies trickled byte by byte leave /healthz answering."""

from __future__ import annotations

import contextlib
import os
import runpy
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from api_helpers import REPO, wait_ready

from api.jsonbody import MAX_BODY_BYTES
from dataaccess import Settings
from scripts.localauth import LocalIssuer
from scripts.localpg import free_port

TRICKLERS = 8  # twice the worker's threads
BODY_BYTES = 65536
TRICKLE_EVERY = 0.2  # seconds per byte
PROBES = 10
PROBE_TIMEOUT = 2.0


def gunicorn_env(settings: Settings, issuer: LocalIssuer, port: int) -> dict[str, str]:
    return {
        **os.environ,
        **settings.to_env(),
        **issuer.env(),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "GUNICORN_THREADS": "4",
        "LOG_LEVEL": "warning",
    }


def open_trickler(port: int, token: str) -> socket.socket:
    """A connection that sent a POST's headers (with a valid token) and then trickles its body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    sock.sendall(
        b"POST /customers HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\n"
        b"Authorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (token.encode(), BODY_BYTES)
    )
    return sock


def probe(base: str) -> float:
    """GET /healthz within PROBE_TIMEOUT; the seconds it took."""
    start = time.monotonic()
    with urllib.request.urlopen(f"{base}/healthz", timeout=PROBE_TIMEOUT) as response:  # noqa: S310
        assert response.status == 200
        response.read()
    return time.monotonic() - start


def test_buffered_body_limit_matches_the_app() -> None:
    """The worker buffers exactly what the app accepts; larger bodies are refused up front."""
    conf = runpy.run_path(str(REPO / "api" / "gunicorn.conf.py"))
    assert conf["max_buffered_body"] == MAX_BODY_BYTES


def test_a_worker_freezes_what_it_loaded_and_collects_young_objects_less_often() -> None:
    """post_worker_init, run in a fresh interpreter as gunicorn runs it in each worker."""
    probe = (
        "import gc, runpy, sys\n"
        f"conf = runpy.run_path({str(REPO / 'api' / 'gunicorn.conf.py')!r})\n"
        "before = gc.get_threshold()[0]\n"
        "conf['post_worker_init'](None)\n"
        "print(before, gc.get_threshold()[0], gc.get_freeze_count() > 0,\n"
        "      conf['GC_YOUNG_THRESHOLD'])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    before, after, frozen, configured = out.stdout.split()
    assert after == configured != before  # Python's default is 700 (2,000 from 3.13)
    assert frozen == "True"


@pytest.mark.slow
def test_trickled_bodies_do_not_starve_healthz(app_settings: Settings, issuer: LocalIssuer) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "api/gunicorn.conf.py", "api:create_app()"],
        cwd=REPO,
        env=gunicorn_env(app_settings, issuer, port),
    )
    base = f"http://127.0.0.1:{port}"
    tricklers: list[socket.socket] = []
    stop = threading.Event()

    def trickle() -> None:
        # One byte per connection per tick, never more than the announced length.
        for _ in range(BODY_BYTES):
            if stop.wait(TRICKLE_EVERY):
                return
            for sock in tricklers:
                with contextlib.suppress(OSError):  # one the server closed; the others go on
                    sock.send(b" ")

    feeder = threading.Thread(target=trickle, daemon=True)
    try:
        wait_ready(f"{base}/healthz", proc, timeout=15)
        token = issuer.token(admin=True)
        tricklers.extend(open_trickler(port, token) for _ in range(TRICKLERS))
        feeder.start()
        time.sleep(1.0)  # the tricklers are mid-body: in today's gthread, every thread is taken
        timings = []
        for _ in range(PROBES):
            timings.append(probe(base))
            time.sleep(0.2)
        assert proc.poll() is None
        assert max(timings) < PROBE_TIMEOUT, timings
    finally:
        stop.set()
        if feeder.ident is not None:
            feeder.join(timeout=2)
        for sock in tricklers:
            sock.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
