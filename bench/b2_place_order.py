"""B2: place a 3-line order through the service vs a hand-written psycopg2 transaction."""

from __future__ import annotations

import hashlib
import json

import psycopg2
import psycopg2.extras

from dataaccess import Database, services
from dataaccess.services import LineRequest

from .harness import (
    PRODUCTS,
    BenchDB,
    Row,
    Sizes,
    alternate,
    customer_ids,
    median,
    rng,
    sku,
    timed,
)


class OutOfStockError(Exception):
    pass


def _orders(n: int, customers: list[int]) -> list[tuple[int, dict[str, int]]]:
    r = rng("B2")
    out = []
    for _ in range(n):
        skus = r.sample(range(PRODUCTS), 3)
        out.append((r.choice(customers), {sku(s): r.randint(1, 3) for s in skus}))
    return out


def place_order_by_hand(
    conn: psycopg2.extensions.connection, customer: int, wanted: dict[str, int]
):
    """What a careful team writes without a data layer: same checks, locks and rows."""
    wanted = dict(sorted(wanted.items()))
    fingerprint = hashlib.sha256(
        json.dumps([customer, sorted(wanted.items())], separators=(",", ":")).encode()
    ).hexdigest()
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM customers WHERE id = %s", (customer,))
        if cur.fetchone() is None:
            raise LookupError(customer)
        cur.execute(
            "SELECT id, sku, price_cents, stock FROM products WHERE sku = ANY(%s) "
            "ORDER BY sku FOR UPDATE",
            (list(wanted),),
        )
        products = {row[1]: row for row in cur.fetchall()}
        for s, q in wanted.items():
            if s not in products:
                raise LookupError(s)
            if products[s][3] < q:
                raise OutOfStockError(s)
        total = sum(products[s][2] * q for s, q in wanted.items())
        cur.execute(
            "INSERT INTO orders (customer_id, status, total_cents, request_fingerprint) "
            "VALUES (%s, 'placed', %s, %s) RETURNING id, created_at",
            (customer, total, fingerprint),
        )
        order_id = cur.fetchone()[0]
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO order_lines (order_id, product_id, sku, quantity, unit_price_cents) "
            "VALUES %s RETURNING id",
            [(order_id, products[s][0], s, q, products[s][2]) for s, q in wanted.items()],
            fetch=True,
        )
        psycopg2.extras.execute_values(
            cur,
            "UPDATE products AS p SET stock = p.stock - v.q, updated_at = now() "
            "FROM (VALUES %s) AS v(id, q) WHERE p.id = v.id",
            [(products[s][0], q) for s, q in wanted.items()],
        )
    return order_id


def run(bdb: BenchDB, sizes: Sizes) -> Row:
    orders = _orders(sizes.orders, customer_ids(bdb))
    db = Database.from_settings(bdb.app_settings())
    conn = psycopg2.connect(**bdb.connect_kwargs())
    try:

        def ours_op(i: int) -> None:
            customer, wanted = orders[i % len(orders)]
            with db.unit_of_work() as uow:
                services.place_order(
                    uow,
                    customer_id=customer,
                    lines=[LineRequest(s, q) for s, q in wanted.items()],
                )

        def base_op(i: int) -> None:
            customer, wanted = orders[i % len(orders)]
            place_order_by_hand(conn, customer, wanted)

        ours, base = alternate(
            lambda n: timed(ours_op, n),
            lambda n: timed(base_op, n),
            total=sizes.orders,
            rounds=sizes.rounds,
        )
    finally:
        conn.close()
        db.dispose()
    return Row(
        key="B2",
        workload=f"place a 3-line order, {sizes.orders:,} times",
        ours=median(ours) * 1e3,
        baseline=median(base) * 1e3,
        unit="ms per order, median",
        goal="latency ratio ≤ 1.3",
        better="lower",
        limit=1.3,
        notes=[
            "ours: `services.place_order` in `db.unit_of_work()`: the products locked FOR NO "
            "KEY UPDATE in sku order and checked, then one statement of data-modifying CTEs "
            "that takes the stock, inserts the order and inserts its lines (the customer is "
            "checked by the order's foreign key), commit: BEGIN, 2 statements, COMMIT = 4 "
            "round trips.",
            "baseline: one psycopg2 connection; an explicit customer check, FOR UPDATE in sku "
            "order, INSERT order RETURNING, execute_values for the lines, one UPDATE ... FROM "
            "(VALUES ...) for the stock, commit: BEGIN, 5 statements, COMMIT = 7 round trips. "
            "Ours does more Python work per order, and fewer round trips.",
        ],
    )
