"""B7's baseline: a minimal hand-written SQS handler, psycopg2 and an IAM token from botocore.

What a careful hand-written function looks like: the RDS client at module scope
(the usual advice), one connection opened on the first invocation with a freshly
signed token and kept for the warm ones, one transaction for the batch, no
logging, no metrics, no validation beyond what the SQL refuses.
"""

from __future__ import annotations

import json
import os
from typing import Any

import botocore.session
import psycopg2

rds = botocore.session.get_session().create_client("rds", region_name=os.environ["AWS_REGION"])
conn: Any = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global conn
    if conn is None:
        token = rds.generate_db_auth_token(
            DBHostname=os.environ["DB_HOST"],
            Port=int(os.environ["DB_PORT"]),
            DBUsername=os.environ["DB_USER"],
            Region=os.environ["AWS_REGION"],
        )
        conn = psycopg2.connect(
            host=os.environ["DB_HOST"],
            port=int(os.environ["DB_PORT"]),
            dbname=os.environ["DB_NAME"],
            user=os.environ["DB_USER"],
            password=token,
            sslmode=os.environ.get("DB_SSLMODE", "verify-full"),
            sslrootcert=os.environ.get("DB_SSLROOTCERT"),
        )
    with conn, conn.cursor() as cur:
        for record in event["Records"]:
            body = json.loads(record["body"])
            cur.execute(
                "INSERT INTO stock_events (event_id, product_id, delta, reason, occurred_at) "
                "SELECT %s, id, %s, %s, %s FROM products WHERE sku = %s "
                "ON CONFLICT (event_id) DO NOTHING RETURNING product_id",
                (body["event_id"], body["delta"], body["reason"], body["occurred_at"], body["sku"]),
            )
            row = cur.fetchone()
            if row is not None:
                cur.execute(
                    "UPDATE products SET stock = stock + %s, updated_at = now() WHERE id = %s",
                    (body["delta"], row[0]),
                )
    return {"batchItemFailures": []}
