"""A small HTTP load generator: keep-alive connections on threads, for a fixed time.

python -m bench.loadgen --port N --seconds S --connections C --paths-from K  (JSON on stdout)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import threading
import time

from .harness import PRODUCTS, sku


def hammer(port: int, seconds: float, connections: int) -> dict[str, float]:
    stop_at = time.perf_counter() + seconds
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections

    # The bearer token our API requires (the baseline ignores it); from the environment.
    headers = {"Authorization": os.environ.get("BENCH_AUTHORIZATION", "")}

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine, i = latencies[n], n
        clock = time.perf_counter
        while clock() < stop_at:
            i += connections
            start = clock()
            try:
                conn.request("GET", f"/products/{sku(i * 7919 % PRODUCTS)}", headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    errors[n] += 1
            except (OSError, http.client.HTTPException):
                errors[n] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                continue
            mine.append(clock() - start)
        conn.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(connections)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    flat = sorted(x for xs in latencies for x in xs)
    count = len(flat)
    return {
        "requests": count,
        "errors": sum(errors),
        "seconds": elapsed,
        "rps": count / elapsed,
        "p50_ms": flat[count // 2] * 1e3 if count else 0.0,
        "p99_ms": flat[min(count - 1, int(count * 0.99))] * 1e3 if count else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(hammer(args.port, args.seconds, args.connections)))


if __name__ == "__main__":
    main()
