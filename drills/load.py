"""Load that keeps running through a fault and remembers what was acknowledged.

`ApiLoad` places orders (each with an Idempotency-Key, retried with the same key
after a 503, as a client should) and reads products, from a few threads.
`LambdaLoad` invokes the stock-events handler in-process with batches of
restock events and redelivers what was not acknowledged, as SQS does.
"""

from __future__ import annotations

import http.client
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from drills.stage import SKUS
from scripts.invoke_local import LocalContext


@dataclass
class Reply:
    at: float  # monotonic time the request was sent
    elapsed: float
    method: str
    status: int  # 0: no HTTP answer at all (connection error)
    problem: bool  # the body was application/problem+json
    retry_after: bool


@dataclass
class ApiLoad:
    """Orders and reads against `base`, from `threads` threads, until stopped."""

    base: str
    customer_id: int
    token: str  # the admin's: it may place orders for the drill's customer and patch products
    threads: int = 4
    timeout: float = 30.0
    replies: list[Reply] = field(default_factory=list)
    acknowledged: dict[str, int] = field(default_factory=dict)  # idempotency key -> order id
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> ApiLoad:
        for n in range(self.threads):
            worker = threading.Thread(target=self._run, args=(n,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=self.timeout + 5)

    # -- figures -------------------------------------------------------------

    def failures(self, since: float = 0.0) -> list[Reply]:
        return [r for r in self.replies if r.at >= since and r.status not in (200, 201)]

    def first_success_after(self, moment: float) -> float | None:
        """Seconds from `moment` to the first success of a request sent at or after it."""
        times = [
            r.at + r.elapsed for r in self.replies if r.at >= moment and r.status in (200, 201)
        ]
        return min(times) - moment if times else None

    # -- the clients -----------------------------------------------------------

    def _run(self, n: int) -> None:
        split = urlsplit(self.base)
        conn = http.client.HTTPConnection(split.hostname or "", split.port, timeout=self.timeout)
        i = 0
        while not self._stop.is_set():
            i += 1
            sku = SKUS[(n + i) % len(SKUS)]
            if i % 2:
                key = f"drill-{secrets.token_hex(8)}"
                body = {"customer_id": self.customer_id, "lines": [{"sku": sku, "quantity": 1}]}
                # Retry the same key until it is acknowledged (or the drill ends).
                while not self._stop.is_set():
                    status, payload = self.send(conn, "POST", "/orders", body, key)
                    if status in (200, 201):
                        with self._lock:
                            self.acknowledged[key] = int(payload["id"])
                        break
                    if status == 0:
                        conn.close()
                    time.sleep(0.2)
            else:
                status, _ = self.send(conn, "GET", f"/products/{sku}", None, None)
                if status == 0:
                    conn.close()
                if status not in (200, 201):
                    time.sleep(0.2)
        conn.close()

    def send(
        self, conn: http.client.HTTPConnection, method: str, path: str, body: Any, key: str | None
    ) -> tuple[int, Any]:
        """One request on `conn`; recorded in `replies`. Status 0: no HTTP answer."""
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        if key:
            headers["Idempotency-Key"] = key
        started = time.monotonic()
        try:
            conn.request(
                method, path, body=json.dumps(body) if body is not None else None, headers=headers
            )
            response = conn.getresponse()
            raw = response.read()
            status = response.status
            ctype = response.getheader("Content-Type") or ""
            retry_after = response.getheader("Retry-After") is not None
        except (OSError, http.client.HTTPException):
            status, raw, ctype, retry_after = 0, b"", "", False
        reply = Reply(
            started,
            time.monotonic() - started,
            method,
            status,
            "problem+json" in ctype,
            retry_after,
        )
        with self._lock:
            self.replies.append(reply)
        payload = json.loads(raw) if raw and "json" in ctype else None
        return status, payload


@dataclass
class LambdaLoad:
    """Batches of restock events through `handler.stock_events_handler`, with redelivery."""

    handler: ModuleType
    batch_size: int = 10
    timeout_ms: int = 30_000
    acknowledged: set[str] = field(default_factory=set)
    invocations: int = 0
    failed_invocations: int = 0
    crashes: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _worker: threading.Thread | None = None

    def start(self) -> LambdaLoad:
        self._worker = threading.Thread(target=self._run, daemon=True)
        self._worker.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=self.timeout_ms / 1000 + 10)

    def invoke(self, bodies: dict[str, str]) -> set[str]:
        """One invocation; return the message ids acknowledged (not reported as failed)."""
        event = {
            "Records": [
                {"messageId": mid, "body": body, "eventSource": "aws:sqs", "receiptHandle": mid}
                for mid, body in bodies.items()
            ]
        }
        self.invocations += 1
        try:
            result = self.handler.stock_events_handler(
                event, LocalContext(timeout_ms=self.timeout_ms)
            )
        except self.handler.BatchProcessingError:
            self.failed_invocations += 1
            return set()
        except Exception as exc:  # a crash: the drill reports it as a failure
            self.crashes.append(type(exc).__name__)
            return set()
        failed = {item["itemIdentifier"] for item in result["batchItemFailures"]}
        return set(bodies) - failed

    def _run(self) -> None:
        pending: dict[str, str] = {}
        while not self._stop.is_set():
            while len(pending) < self.batch_size:
                event_id = f"drill-ev-{secrets.token_hex(8)}"
                pending[event_id] = json.dumps(
                    {
                        "event_id": event_id,
                        "sku": SKUS[len(pending) % len(SKUS)],
                        "delta": 1,
                        "reason": "drill restock",
                        "occurred_at": "2026-01-01T00:00:00+00:00",
                    }
                )
            done = self.invoke(pending)
            self.acknowledged |= done
            for message_id in done:
                del pending[message_id]
            if not done:
                time.sleep(0.2)  # SQS's redelivery delay, shortened
