"""B7's floor: the baseline's handler (bench/cold_baseline.py) on a SQLAlchemy Core engine.

The same token, login, statements and transaction, through `sqlalchemy.create_engine`
and `text()`: what importing SQLAlchemy and building an engine cost a cold start, which
any handler built on SQLAlchemy pays before its own code runs.
"""

from __future__ import annotations

import json
import os
from typing import Any

import botocore.session
import psycopg2
import sqlalchemy as sa

rds = botocore.session.get_session().create_client("rds", region_name=os.environ["AWS_REGION"])
_INSERT = sa.text(
    "INSERT INTO stock_events (event_id, product_id, delta, reason, occurred_at) "
    "SELECT :event_id, id, :delta, :reason, :occurred_at FROM products WHERE sku = :sku "
    "ON CONFLICT (event_id) DO NOTHING RETURNING product_id"
)
_UPDATE = sa.text("UPDATE products SET stock = stock + :delta, updated_at = now() WHERE id = :id")


def _connect() -> Any:
    token = rds.generate_db_auth_token(
        DBHostname=os.environ["DB_HOST"],
        Port=int(os.environ["DB_PORT"]),
        DBUsername=os.environ["DB_USER"],
        Region=os.environ["AWS_REGION"],
    )
    return psycopg2.connect(
        host=os.environ["DB_HOST"],
        port=int(os.environ["DB_PORT"]),
        dbname=os.environ["DB_NAME"],
        user=os.environ["DB_USER"],
        password=token,
        sslmode=os.environ.get("DB_SSLMODE", "verify-full"),
        sslrootcert=os.environ.get("DB_SSLROOTCERT"),
    )


engine = sa.create_engine("postgresql+psycopg2://", creator=_connect, pool_size=1, max_overflow=0)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    with engine.begin() as conn:
        for record in event["Records"]:
            body = json.loads(record["body"])
            product_id = conn.execute(
                _INSERT,
                {
                    "event_id": body["event_id"],
                    "delta": body["delta"],
                    "reason": body["reason"],
                    "occurred_at": body["occurred_at"],
                    "sku": body["sku"],
                },
            ).scalar()
            if product_id is not None:
                conn.execute(_UPDATE, {"delta": body["delta"], "id": product_id})
    return {"batchItemFailures": []}
