"""B5's baseline: a minimal Flask app, one psycopg2 pool per worker, same gunicorn settings.

gunicorn -c api/gunicorn.conf.py 'bench.baseline_app:create_app()'
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, abort
from psycopg2.pool import ThreadedConnectionPool


def make_pool() -> ThreadedConnectionPool:
    """One connection per gunicorn thread, from the same DB_* variables as the API."""
    threads = int(os.environ.get("GUNICORN_THREADS", "4"))
    # minconn = maxconn: psycopg2's pool closes returned connections above minconn.
    return ThreadedConnectionPool(
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


# The same query as the API's repository (ProductRepository.get_by_sku): every column.
SELECT_PRODUCT = (
    "SELECT id, sku, name, price_cents, stock, created_at, updated_at FROM products WHERE sku = %s"
)


def read_product(pool: ThreadedConnectionPool, sku: str) -> tuple[Any, ...] | None:
    """(id, sku, name, price_cents, stock, created_at, updated_at), or None."""
    conn = pool.getconn()
    try:
        with conn.cursor() as cur:
            cur.execute(SELECT_PRODUCT, (sku,))
            row: tuple[Any, ...] | None = cur.fetchone()
        conn.rollback()
    finally:
        pool.putconn(conn)
    return row


def create_app() -> Flask:
    app = Flask(__name__)
    pool = make_pool()

    @app.get("/products/<sku>")
    def get_product(sku: str) -> dict[str, Any]:
        row = read_product(pool, sku)
        if row is None:
            abort(404)
        return {"sku": row[1], "name": row[2], "price_cents": row[3], "stock": row[4]}

    return app
