"""Placing and cancelling orders: atomic reservations, idempotency keys, concurrency."""

import random
import secrets
import threading
from dataclasses import replace

import pytest
import sqlalchemy as sa

from dataaccess import Database, services
from dataaccess.errors import (
    CustomerNotFoundError,
    IdempotencyKeyReusedError,
    InsufficientStockError,
    InvalidRequestError,
    ProductNotFoundError,
)
from dataaccess.services import LineRequest


def seed(db, stocks, *, price=100):
    with db.unit_of_work() as uow:
        customer = services.create_customer(
            uow, email=f"{secrets.token_hex(4)}@example.com", name="Buyer"
        )
    for sku, stock in stocks.items():
        with db.unit_of_work() as uow:
            services.create_product(uow, sku=sku, name=sku, price_cents=price, stock=stock)
    return customer.id


def stock_of(db, sku):
    with db.unit_of_work(read_only=True) as uow:
        return services.get_product(uow, sku).stock


def place(db, customer_id, lines, key=None):
    with db.unit_of_work() as uow:
        return services.place_order(
            uow,
            customer_id=customer_id,
            lines=[LineRequest(s, q) for s, q in lines],
            idempotency_key=key,
        )


def test_order_reserves_every_line_and_totals_the_price(db):
    customer = seed(db, {"A": 5, "B": 5}, price=250)
    placed = place(db, customer, [("A", 2), ("B", 1), ("A", 1)])
    assert not placed.replayed
    assert placed.order.total_cents == 4 * 250
    assert sorted((line.sku, line.quantity) for line in placed.order.lines) == [("A", 3), ("B", 1)]
    assert (stock_of(db, "A"), stock_of(db, "B")) == (2, 4)


def test_short_line_refuses_the_whole_order(db):
    customer = seed(db, {"A": 5, "B": 1})
    with pytest.raises(InsufficientStockError) as caught:
        place(db, customer, [("A", 2), ("B", 2)])
    assert caught.value.sku == "B"
    assert (stock_of(db, "A"), stock_of(db, "B")) == (5, 1)


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ([("A", 1), ("NOPE", 1)], ProductNotFoundError),
        ([("A", 0)], InvalidRequestError),
        ([("A", -3)], InvalidRequestError),
        ([("A", 10_001)], InvalidRequestError),
        ([], InvalidRequestError),
    ],
)
def test_bad_orders_change_nothing(db, lines, error):
    customer = seed(db, {"A": 5})
    with pytest.raises(error):
        place(db, customer, lines)
    assert stock_of(db, "A") == 5


def test_unknown_customer_is_refused(db):
    seed(db, {"A": 5})
    with pytest.raises(CustomerNotFoundError):
        place(db, 999_999, [("A", 1)])


def test_cancel_returns_stock_once(db):
    customer = seed(db, {"A": 5})
    order = place(db, customer, [("A", 3)]).order
    for _ in range(2):
        with db.unit_of_work() as uow:
            cancelled = services.cancel_order(uow, order.id)
        assert cancelled.status == "cancelled"
        assert stock_of(db, "A") == 5


def test_same_idempotency_key_yields_one_order(db):
    customer = seed(db, {"A": 5})
    first = place(db, customer, [("A", 2)], key="key-1")
    second = place(db, customer, [("A", 2)], key="key-1")
    assert second.replayed
    assert second.order.id == first.order.id
    assert stock_of(db, "A") == 3
    with pytest.raises(IdempotencyKeyReusedError):
        place(db, customer, [("A", 1)], key="key-1")


def new_customer(db):
    with db.unit_of_work() as uow:
        return services.create_customer(
            uow, email=f"{secrets.token_hex(4)}@example.com", name="Other"
        ).id


def test_idempotency_keys_belong_to_their_customer(db):
    alice = seed(db, {"A": 5})
    bob = new_customer(db)
    first = place(db, alice, [("A", 2)], key="shared-key")
    # Bob's same key is Bob's own: a new order, not Alice's (nor a refusal that
    # would tell him Alice used it), even with another body.
    other = place(db, bob, [("A", 1)], key="shared-key")
    assert not other.replayed
    assert other.order.id != first.order.id
    assert other.order.customer_id == bob
    assert stock_of(db, "A") == 2
    # Each customer's retry still replays their own order.
    again = place(db, alice, [("A", 2)], key="shared-key")
    assert again.replayed
    assert again.order.id == first.order.id
    assert place(db, bob, [("A", 1)], key="shared-key").order.id == other.order.id
    assert stock_of(db, "A") == 2
    # And a different body under a customer's used key is refused as before.
    with pytest.raises(IdempotencyKeyReusedError):
        place(db, alice, [("A", 1)], key="shared-key")
    with db.unit_of_work(read_only=True) as uow:
        assert uow.orders.get_by_idempotency_key(alice, "shared-key").id == first.order.id
        assert uow.orders.get_by_idempotency_key(bob, "shared-key").id == other.order.id
        assert uow.orders.get_by_idempotency_key(new_customer(db), "shared-key") is None


def test_one_key_under_two_customers_is_one_constraint_each(admin, db):
    alice = seed(db, {"A": 5})
    bob = new_customer(db)
    place(db, alice, [("A", 1)], key="k")
    place(db, bob, [("A", 1)], key="k")
    columns = admin.execute(
        "SELECT array_agg(a.attname ORDER BY k.n) FROM pg_constraint c "
        "CROSS JOIN unnest(c.conkey) WITH ORDINALITY AS k(attnum, n) "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
        "WHERE c.conname = 'uq_orders_customer_id_idempotency_key' AND c.contype = 'u'"
    ).fetchone()[0]
    assert columns == ["customer_id", "idempotency_key"]
    with pytest.raises(sa.exc.IntegrityError) as caught, db.writer.begin() as conn:
        # The same customer's key twice, past the service: the constraint refuses it.
        conn.execute(
            sa.text(
                "INSERT INTO orders (customer_id, total_cents, idempotency_key) VALUES (:c, 0, 'k')"
            ),
            {"c": alice},
        )
    assert caught.value.orig.diag.constraint_name == "uq_orders_customer_id_idempotency_key"


def test_concurrent_customers_with_one_key_make_one_order_each(db):
    customers = [seed(db, {"A": 50})] + [new_customer(db) for _ in range(3)]
    barrier = threading.Barrier(8)
    results = []

    def buy(i):
        barrier.wait()
        results.append(place(db, customers[i % 4], [("A", 1)], key="race-key"))

    run_threads(buy, 8, with_index=True)
    by_customer = {}
    for r in results:
        by_customer.setdefault(r.order.customer_id, set()).add(r.order.id)
    assert sorted(by_customer) == sorted(customers)
    assert all(len(ids) == 1 for ids in by_customer.values())
    assert len(set().union(*by_customer.values())) == 4
    assert sum(not r.replayed for r in results) == 4
    assert stock_of(db, "A") == 46


def test_concurrent_requests_with_one_key_make_one_order(db):
    customer = seed(db, {"A": 50})
    barrier = threading.Barrier(8)
    results = []

    def buy():
        barrier.wait()
        results.append(place(db, customer, [("A", 1)], key="race-key"))

    run_threads(buy, 8)
    assert len({r.order.id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert stock_of(db, "A") == 49


def run_threads(target, count, *, with_index=False):
    threads = [
        threading.Thread(target=target, args=(i,) if with_index else ()) for i in range(count)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_concurrent_buyers_never_oversell(app_settings):
    """12 threads, each on its own connection, buy random baskets of 3 hot SKUs."""
    threads, orders_each = 12, 15
    initial = {"HOT-1": 40, "HOT-2": 25, "HOT-3": 60}
    # A pool as wide as the thread count, so every thread holds its own connection.
    db = Database.from_settings(replace(app_settings, pool_size=threads, max_overflow=0))
    customer = seed(db, initial)
    barrier = threading.Barrier(threads)
    sold = dict.fromkeys(initial, 0)
    refused = []
    lock = threading.Lock()
    backends = set()

    def buyer(seed_value):
        rng = random.Random(seed_value)
        barrier.wait()
        for _ in range(orders_each):
            skus = rng.sample(sorted(initial), rng.randint(1, 3))
            basket = [(sku, rng.randint(1, 4)) for sku in skus]
            try:
                with db.unit_of_work() as uow:
                    backends.add(uow.session.scalar(sa.text("SELECT pg_backend_pid()")))
                    services.place_order(
                        uow, customer_id=customer, lines=[LineRequest(s, q) for s, q in basket]
                    )
            except InsufficientStockError:
                with lock:
                    refused.append(basket)
                continue
            with lock:
                for sku, qty in basket:
                    sold[sku] += qty

    run_threads(buyer, threads, with_index=True)

    with db.writer.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT p.sku, p.stock, coalesce(sum(l.quantity), 0) FROM products p "
                "LEFT JOIN order_lines l ON l.product_id = p.id GROUP BY p.sku, p.stock"
            )
        ).all()
    db.dispose()
    assert len(rows) == len(initial)
    for sku, remaining, in_orders in rows:
        assert remaining >= 0
        assert in_orders == sold[sku]
        assert sold[sku] + remaining == initial[sku]
    assert refused, "the load should exhaust at least one SKU"
    assert len(backends) >= 8, "threads should have run on their own connections"
