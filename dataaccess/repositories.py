"""Repositories: SQLAlchemy Core statements on a unit of work's connection, returning records.

They never begin, commit or close anything. Every statement is built once, at
import: SQLAlchemy then finds its compiled form in the cache on each call, and
the result rows become frozen records (`records.py`) without the ORM's identity
map and change tracking, which on a point read cost more than the query.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Text, any_, bindparam, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY

from .models import MAX_INT32, Base, StockEvent
from .records import (
    CustomerRecord,
    OrderLineRecord,
    OrderRecord,
    ProductRecord,
    StockEventIn,
)

if TYPE_CHECKING:
    from .uow import UnitOfWork

_customers = Base.metadata.tables["customers"]
_products = Base.metadata.tables["products"]
_orders = Base.metadata.tables["orders"]
_lines = Base.metadata.tables["order_lines"]

_CUSTOMER = (_customers.c.id, _customers.c.email, _customers.c.name, _customers.c.created_at)
_INSERT_CUSTOMER = insert(_customers).returning(*_CUSTOMER)
_CUSTOMER_BY_ID = select(*_CUSTOMER).where(_customers.c.id == bindparam("id"))

# In ProductRecord's field order.
_PRODUCT = (
    _products.c.id,
    _products.c.sku,
    _products.c.name,
    _products.c.price_cents,
    _products.c.stock,
    _products.c.created_at,
    _products.c.updated_at,
)
_INSERT_PRODUCT = insert(_products).returning(*_PRODUCT)
_PRODUCT_BY_SKU = select(*_PRODUCT).where(_products.c.sku == bindparam("sku"))
# A None leaves the column as it is.
_UPDATE_PRODUCT = (
    update(_products)
    .where(_products.c.sku == bindparam("match_sku"))
    .values(
        name=func.coalesce(bindparam("new_name", type_=_products.c.name.type), _products.c.name),
        price_cents=func.coalesce(
            bindparam("new_price_cents", type_=_products.c.price_cents.type),
            _products.c.price_cents,
        ),
        updated_at=func.now(),
    )
    .returning(*_PRODUCT)
)
_LOCK_STOCK = (
    select(_products.c.sku, _products.c.id, _products.c.price_cents, _products.c.stock)
    # = ANY(array): one bound parameter for any number of skus (an expanding IN
    # would render and bind one parameter per sku, a thousand for a chunk of events).
    .where(_products.c.sku == any_(bindparam("skus", type_=ARRAY(Text))))
    .order_by(_products.c.sku)
    # NO KEY UPDATE: what an UPDATE of non-key columns needs, and it does not
    # block the foreign-key checks of inserts that reference these rows.
    .with_for_update(key_share=True)
)
# One statement for any number of products. Callers hold the row locks (taken
# in sku order), so the arithmetic cannot race; the CHECK keeps stock >= 0.
_ADJUST_STOCK = text(
    """
    UPDATE products AS p SET stock = p.stock + d.delta, updated_at = now()
    FROM unnest(CAST(:ids AS bigint[]), CAST(:deltas AS integer[])) AS d(id, delta)
    WHERE p.id = d.id
    """
)

# In OrderRecord's field order, then the line's, in OrderLineRecord's.
_ORDER = (
    _orders.c.id,
    _orders.c.customer_id,
    _orders.c.status,
    _orders.c.total_cents,
    _orders.c.idempotency_key,
    _orders.c.request_fingerprint,
    _orders.c.created_at,
    _orders.c.cancelled_at,
)
_ORDER_WIDTH = len(_ORDER)
_WITH_LINES = (
    select(
        *_ORDER,
        _lines.c.id.label("line_id"),
        _lines.c.product_id,
        _lines.c.sku,
        _lines.c.quantity,
        _lines.c.unit_price_cents,
    )
    .select_from(_orders.outerjoin(_lines, _lines.c.order_id == _orders.c.id))
    .order_by(_lines.c.id)
)
_ORDER_BY_ID = _WITH_LINES.where(_orders.c.id == bindparam("id"))
_ORDER_BY_ID_FOR_UPDATE = _ORDER_BY_ID.with_for_update(of=_orders)
# Keys are unique per customer (uq_orders_customer_id_idempotency_key serves this).
_ORDER_BY_KEY = _WITH_LINES.where(
    _orders.c.customer_id == bindparam("customer_id"),
    _orders.c.idempotency_key == bindparam("key"),
)
# One round trip for the whole order: take the stock from the products (which
# the caller has locked and checked), insert the order, insert its lines in
# request order, and return them all. Data-modifying CTEs all run, in one
# snapshot; the foreign keys (customer, products) are checked at the end.
_PLACE_ORDER = text(
    """
    WITH line AS (
        SELECT * FROM unnest(
            CAST(:product_ids AS bigint[]), CAST(:skus AS text[]),
            CAST(:quantities AS integer[]), CAST(:prices AS integer[])
        ) WITH ORDINALITY AS l(product_id, sku, quantity, unit_price_cents, n)
    ), taken AS (
        UPDATE products AS p SET stock = p.stock - line.quantity, updated_at = now()
        FROM line WHERE p.id = line.product_id
    ), placed AS (
        INSERT INTO orders (customer_id, status, total_cents, idempotency_key, request_fingerprint)
        VALUES (:customer_id, 'placed', :total_cents, :idempotency_key, :request_fingerprint)
        RETURNING id, customer_id, status, total_cents, idempotency_key, request_fingerprint,
                  created_at, cancelled_at
    ), inserted AS (
        INSERT INTO order_lines (order_id, product_id, sku, quantity, unit_price_cents)
        SELECT placed.id, line.product_id, line.sku, line.quantity, line.unit_price_cents
        FROM placed, line ORDER BY line.n
        RETURNING id, product_id, sku, quantity, unit_price_cents
    )
    SELECT placed.*, inserted.* FROM placed, inserted ORDER BY inserted.id
    """
)
_CANCEL_ORDER = (
    update(_orders)
    .where(_orders.c.id == bindparam("order_id"))
    .values(status="cancelled", cancelled_at=func.now())
    .returning(_orders.c.cancelled_at)
)

_RECORDED = select(StockEvent.event_id).where(
    StockEvent.event_id == any_(bindparam("ids", type_=ARRAY(Text)))
)
# The tail of both ingest statements, after a CTE `accepted` of (event_id,
# product_id, delta, reason, occurred_at): insert the ledger rows (sorted by
# event id, so two transactions wait on each other's keys in one order) and,
# only when every one of them was inserted, move each product's stock by their
# sum. When some id was already in the ledger, the caller's decisions counted a
# delta they should not have: the stock is left alone (no CHECK can fail) and
# the caller rolls back.
_RECORD_ACCEPTED = """
    recorded AS (
        INSERT INTO stock_events (event_id, product_id, delta, reason, occurred_at)
        SELECT event_id, product_id, delta, reason, occurred_at FROM accepted
        ORDER BY event_id
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id, product_id, delta
    ), moved AS (
        UPDATE products AS p SET stock = p.stock + m.delta, updated_at = now()
        FROM (
            SELECT product_id, sum(delta) AS delta FROM recorded GROUP BY product_id
        ) AS m
        WHERE p.id = m.product_id AND m.delta <> 0
          AND (SELECT count(*) FROM recorded) = cardinality(CAST(:ids AS text[]))
    )
"""
# Events already decided (by the caller, on locked stock): one round trip.
# Returns the inserted event ids.
_RECORD_AND_APPLY = text(
    """
    WITH accepted AS (
        SELECT * FROM unnest(
            CAST(:ids AS text[]), CAST(:product_ids AS bigint[]), CAST(:deltas AS integer[]),
            CAST(:reasons AS text[]), CAST(:occurred AS timestamptz[])
        ) AS e(event_id, product_id, delta, reason, occurred_at)
    ),"""
    + _RECORD_ACCEPTED
    + """
    SELECT event_id FROM recorded
    """
)


class CustomerRepository:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def add(self, *, email: str, name: str) -> CustomerRecord:
        """Insert a customer (IntegrityError if the email is taken)."""
        row = self.uow.execute(_INSERT_CUSTOMER, {"email": email, "name": name}).one()
        return CustomerRecord(*row)

    def get(self, customer_id: int) -> CustomerRecord | None:
        row = self.uow.execute(_CUSTOMER_BY_ID, {"id": customer_id}).one_or_none()
        return None if row is None else CustomerRecord(*row)


class StockLevel(NamedTuple):
    id: int
    price_cents: int
    stock: int


class ProductRepository:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def add(self, *, sku: str, name: str, price_cents: int, stock: int) -> ProductRecord:
        """Insert a product (IntegrityError if the sku is taken)."""
        row = self.uow.execute(
            _INSERT_PRODUCT, {"sku": sku, "name": name, "price_cents": price_cents, "stock": stock}
        ).one()
        return ProductRecord(*row)

    def get_by_sku(self, sku: str) -> ProductRecord | None:
        row = self.uow.execute(_PRODUCT_BY_SKU, {"sku": sku}).one_or_none()
        return None if row is None else ProductRecord(*row)

    def update(
        self, sku: str, *, name: str | None = None, price_cents: int | None = None
    ) -> ProductRecord | None:
        """Set the name and/or price (None keeps it); None if there is no such sku."""
        row = self.uow.execute(
            _UPDATE_PRODUCT, {"match_sku": sku, "new_name": name, "new_price_cents": price_cents}
        ).one_or_none()
        return None if row is None else ProductRecord(*row)

    def page(
        self, *, after_sku: str | None, limit: int, stock_below: int | None
    ) -> list[ProductRecord]:
        """Products in sku order, after `after_sku` (keyset pagination)."""
        query = select(*_PRODUCT).order_by(_products.c.sku).limit(limit)
        if after_sku is not None:
            query = query.where(_products.c.sku > after_sku)
        if stock_below is not None:
            query = query.where(_products.c.stock < stock_below)
        return [ProductRecord(*row) for row in self.uow.execute(query)]

    def lock_stock(self, skus: Sequence[str]) -> dict[str, StockLevel]:
        """Lock the rows in sku order and read their stock.

        Every writer of stock locks products first, in this order (orders and
        cancellations here; event ingest in its ledger statement), so they
        queue instead of deadlocking.
        """
        rows = self.uow.execute(_LOCK_STOCK, {"skus": list(skus)})
        return {sku: StockLevel(pid, price, stock) for sku, pid, price, stock in rows}

    def adjust_stock(self, deltas: Mapping[int, int]) -> None:
        """Add `delta` to each product id's stock, in one statement (rows locked by the caller)."""
        if deltas:
            self.uow.execute(_ADJUST_STOCK, {"ids": list(deltas), "deltas": list(deltas.values())})


class NewLine(NamedTuple):
    product_id: int
    sku: str
    quantity: int
    unit_price_cents: int


class OrderRepository:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def place(
        self,
        *,
        customer_id: int,
        total_cents: int,
        lines: Sequence[NewLine],
        idempotency_key: str | None = None,
        request_fingerprint: str | None = None,
    ) -> OrderRecord:
        """Take each line's quantity from its product's stock and insert the order: one statement.

        The caller holds the products' row locks and has checked the stock.
        An unknown customer fails the order's foreign key (IntegrityError).
        """
        rows = self.uow.execute(
            _PLACE_ORDER,
            {
                "product_ids": [line.product_id for line in lines],
                "skus": [line.sku for line in lines],
                "quantities": [line.quantity for line in lines],
                "prices": [line.unit_price_cents for line in lines],
                "customer_id": customer_id,
                "total_cents": total_cents,
                "idempotency_key": idempotency_key,
                "request_fingerprint": request_fingerprint,
            },
        ).all()
        return _order(rows)

    def get(self, order_id: int, *, for_update: bool = False) -> OrderRecord | None:
        """The order with its lines; `for_update` locks the order's row (not its products)."""
        statement = _ORDER_BY_ID_FOR_UPDATE if for_update else _ORDER_BY_ID
        rows = self.uow.execute(statement, {"id": order_id}).all()
        return _order(rows) if rows else None

    def get_by_idempotency_key(self, customer_id: int, key: str) -> OrderRecord | None:
        """The customer's order made with this key; another customer's never."""
        rows = self.uow.execute(_ORDER_BY_KEY, {"customer_id": customer_id, "key": key}).all()
        return _order(rows) if rows else None

    def mark_cancelled(self, order: OrderRecord) -> OrderRecord:
        """Set the order's status to cancelled (stock is the caller's business)."""
        cancelled_at = self.uow.execute(_CANCEL_ORDER, {"order_id": order.id}).scalar_one()
        return replace(order, status="cancelled", cancelled_at=cancelled_at)


def _order(rows: Sequence[Sequence[Any]]) -> OrderRecord:
    """An order from rows of (order columns..., line columns...), lines in row order."""
    head = rows[0]
    lines = tuple(
        OrderLineRecord(*row[_ORDER_WIDTH:]) for row in rows if row[_ORDER_WIDTH] is not None
    )
    order_id, customer_id, status, total_cents, key, fingerprint, created_at, cancelled_at = head[
        :_ORDER_WIDTH
    ]
    return OrderRecord(
        order_id,
        customer_id,
        status,
        total_cents,
        key,
        fingerprint,
        created_at,
        cancelled_at,
        lines,
    )


class NewStockEvent(NamedTuple):
    event_id: str
    product_id: int
    delta: int
    reason: str
    occurred_at: dt.datetime


# The common case in one round trip: lock the chunk's products FOR NO KEY UPDATE
# in sku order, replay each product's events in batch order on the locked stock
# (a running sum per product), and only when every event fits (known SKU, stock
# within 0..MAX_INT32 at every step) insert all ledger rows and move the stock,
# the latter only when every row was inserted. Returns the locked products
# (sku, id, price, stock, NULL) and the inserted ids (NULLs, then event_id).
_APPLY_IF_ALL_FIT = text(
    """
    WITH locked AS (
        SELECT id, sku, price_cents, stock FROM products
        WHERE sku = ANY(CAST(:skus AS text[]))
        ORDER BY sku
        FOR NO KEY UPDATE
    ), event AS (
        SELECT e.event_id, l.id AS product_id, e.delta, e.reason, e.occurred_at,
               l.stock + sum(e.delta) OVER (PARTITION BY e.sku ORDER BY e.n) AS running
        FROM unnest(
            CAST(:ids AS text[]), CAST(:event_skus AS text[]), CAST(:deltas AS integer[]),
            CAST(:reasons AS text[]), CAST(:occurred AS timestamptz[])
        ) WITH ORDINALITY AS e(event_id, sku, delta, reason, occurred_at, n)
        LEFT JOIN locked AS l ON l.sku = e.sku
    ), verdict AS (
        SELECT bool_and(product_id IS NOT NULL AND running BETWEEN 0 AND :max_stock) AS fits
        FROM event
    ), accepted AS (
        SELECT event_id, product_id, delta, reason, occurred_at
        FROM event, verdict WHERE verdict.fits
    ),"""
    + _RECORD_ACCEPTED
    + """
    SELECT CAST(sku AS text), id, price_cents, stock, CAST(NULL AS text) FROM locked
    UNION ALL
    SELECT NULL, NULL, NULL, NULL, event_id FROM recorded
    """
)


class StockEventRepository:
    """The idempotency ledger: rows are only ever added (the role may not delete them)."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def recorded(self, event_ids: Sequence[str]) -> set[str]:
        """Which of these event ids the ledger already holds."""
        if not event_ids:
            return set()
        return set(self.uow.execute(_RECORDED, {"ids": list(event_ids)}).scalars())

    def apply_if_all_fit(
        self, events: Sequence[StockEventIn]
    ) -> tuple[dict[str, StockLevel], set[str]]:
        """Lock the events' products and, when every event fits, record and apply them all.

        One statement. Returns the locked stock by sku and the ids inserted: all
        of them when everything fitted and none was in the ledger; none when
        some event did not fit (the stock is then the caller's to replay). When
        some ids were in the ledger already, the stock is not touched and the
        caller must roll back.
        """
        rows = self.uow.execute(
            _APPLY_IF_ALL_FIT,
            {
                "skus": list({e.sku for e in events}),
                "ids": [e.event_id for e in events],
                "event_skus": [e.sku for e in events],
                "deltas": [e.delta for e in events],
                "reasons": [e.reason for e in events],
                "occurred": [e.occurred_at for e in events],
                "max_stock": MAX_INT32,
            },
        ).all()
        levels = {row[0]: StockLevel(*row[1:4]) for row in rows if row[0] is not None}
        inserted = {row[4] for row in rows if row[4] is not None}
        return levels, inserted

    def record_and_apply(self, events: Sequence[NewStockEvent]) -> set[str]:
        """Add the events' ledger rows and their deltas to the stock, in one statement.

        The caller holds the products' row locks. Returns the ids inserted. If
        that is not all of them (some were in the ledger already), the stock is
        not touched, and the caller must roll back.
        """
        if not events:
            return set()
        rows = self.uow.execute(
            _RECORD_AND_APPLY,
            {
                "ids": [e.event_id for e in events],
                "product_ids": [e.product_id for e in events],
                "deltas": [e.delta for e in events],
                "reasons": [e.reason for e in events],
                "occurred": [e.occurred_at for e in events],
            },
        )
        return set(rows.scalars())
