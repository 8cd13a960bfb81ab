"""B6's baseline: the common Lambda pattern, per invocation read the secret and connect.

Deliberately no pool and no cache: what many handlers look like. The boto3
client is at module scope (the usual advice, and kind to the baseline).
"""

from __future__ import annotations

import json
import os
from typing import Any

import boto3
import psycopg2

secrets_client = boto3.client("secretsmanager", region_name=os.environ.get("AWS_REGION"))


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    secret = json.loads(
        secrets_client.get_secret_value(SecretId=os.environ["DB_SECRET_ID"])["SecretString"]
    )
    conn = psycopg2.connect(
        host=os.environ["DB_HOST"],
        port=int(os.environ["DB_PORT"]),
        dbname=os.environ["DB_NAME"],
        user=secret["username"],
        password=secret["password"],
        sslmode=os.environ.get("DB_SSLMODE", "verify-full"),
        sslrootcert=os.environ.get("DB_SSLROOTCERT"),
    )
    failures = []
    try:
        for record in event["Records"]:
            body = json.loads(record["body"])
            try:
                with conn, conn.cursor() as cur:
                    cur.execute(
                        "INSERT INTO stock_events (event_id, product_id, delta, reason, "
                        "occurred_at) SELECT %s, id, %s, %s, %s FROM products WHERE sku = %s "
                        "ON CONFLICT (event_id) DO NOTHING RETURNING product_id",
                        (
                            body["event_id"],
                            body["delta"],
                            body["reason"],
                            body["occurred_at"],
                            body["sku"],
                        ),
                    )
                    row = cur.fetchone()
                    if row is not None:
                        cur.execute(
                            "UPDATE products SET stock = stock + %s, updated_at = now() "
                            "WHERE id = %s",
                            (body["delta"], row[0]),
                        )
            except psycopg2.Error:
                failures.append({"itemIdentifier": record["messageId"]})
    finally:
        conn.close()
    return {"batchItemFailures": failures}
