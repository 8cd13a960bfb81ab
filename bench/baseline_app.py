"""B5's baseline: a minimal Flask app, one psycopg2 pool per worker, same gunicorn settings.

gunicorn -c api/gunicorn.conf.py 'bench.baseline_app:create_app()'
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, abort
from psycopg2.pool import ThreadedConnectionPool


def create_app() -> Flask:
    app = Flask(__name__)
    threads = int(os.environ.get("GUNICORN_THREADS", "4"))
    # minconn = maxconn: psycopg2's pool closes returned connections above minconn.
    pool = ThreadedConnectionPool(
        threads,
        threads,
        host=os.environ["DB_HOST"],
        port=int(os.environ["DB_PORT"]),
        dbname=os.environ["DB_NAME"],
        user=os.environ["DB_USER"],
        password=os.environ["DB_PASSWORD"],
        # The same TLS settings as the API under test.
        sslmode=os.environ.get("DB_SSLMODE", "verify-full"),
        sslrootcert=os.environ.get("DB_SSLROOTCERT"),
    )

    @app.get("/products/<sku>")
    def get_product(sku: str) -> dict[str, Any]:
        conn = pool.getconn()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT sku, name, price_cents, stock FROM products WHERE sku = %s", (sku,)
                )
                row = cur.fetchone()
            conn.rollback()
        finally:
            pool.putconn(conn)
        if row is None:
            abort(404)
        return {"sku": row[0], "name": row[1], "price_cents": row[2], "stock": row[3]}

    return app
