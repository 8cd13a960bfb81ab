"""Repositories: SQLAlchemy statements on a unit of work's connection, returning records.

They never begin, commit or close anything. Statements are built once, at
import, so SQLAlchemy finds their compiled form in its cache on each call (all
but `page`'s and `adjust_stock`'s, whose shape depends on their arguments).
Rows become frozen records (`records.py`) by column name: each statement
selects the columns its record names.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Integer,
    Table,
    Text,
    any_,
    bindparam,
    column,
    func,
    insert,
    select,
    text,
    update,
    values,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from . import tables
from .records import CustomerRecord, OrderLineRecord, OrderRecord, ProductRecord

if TYPE_CHECKING:
    from .uow import UnitOfWork

_customers = tables.customers
_products = tables.products
_orders = tables.orders
_lines = tables.order_lines
_stock_events = tables.stock_events

# The ledger's primary key: the constraint a second insert of an event id violates.
LEDGER_KEY = "pk_stock_events"


def violated_constraint(exc: IntegrityError) -> str | None:
    """The name of the constraint a statement's IntegrityError reports (None if none)."""
    return getattr(getattr(exc.orig, "diag", None), "constraint_name", None)


def _fields_of(table: Table, record: type) -> list[ColumnElement[Any]]:
    """The table's columns that `record` has a field for, by name."""
    return [table.c[f.name] for f in fields(record) if f.name in table.c]


# -- customers --------------------------------------------------------------------

_CUSTOMER = _fields_of(_customers, CustomerRecord)
_INSERT_CUSTOMER = insert(_customers).returning(*_CUSTOMER)
_CUSTOMER_BY_ID = select(*_CUSTOMER).where(_customers.c.id == bindparam("id"))


class CustomerRepository:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def add(self, *, email: str, name: str) -> CustomerRecord:
        """Insert a customer (IntegrityError if the email is taken)."""
        row = self.uow.execute(_INSERT_CUSTOMER, {"email": email, "name": name}).one()
        return CustomerRecord(**row._asdict())

    def get(self, customer_id: int) -> CustomerRecord | None:
        row = self.uow.execute(_CUSTOMER_BY_ID, {"id": customer_id}).one_or_none()
        return None if row is None else CustomerRecord(**row._asdict())


# -- products and their stock -----------------------------------------------------

_PRODUCT = _fields_of(_products, ProductRecord)
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
        return ProductRecord(**row._asdict())

    def get_by_sku(self, sku: str) -> ProductRecord | None:
        row = self.uow.execute(_PRODUCT_BY_SKU, {"sku": sku}).one_or_none()
        return None if row is None else ProductRecord(**row._asdict())

    def update(
        self, sku: str, *, name: str | None = None, price_cents: int | None = None
    ) -> ProductRecord | None:
        """Set the name and/or price (None keeps it); None if there is no such sku."""
        row = self.uow.execute(
            _UPDATE_PRODUCT, {"match_sku": sku, "new_name": name, "new_price_cents": price_cents}
        ).one_or_none()
        return None if row is None else ProductRecord(**row._asdict())

    def page(
        self, *, after_sku: str | None, limit: int, stock_below: int | None
    ) -> list[ProductRecord]:
        """Products in sku order, after `after_sku` (keyset pagination)."""
        query = select(*_PRODUCT).order_by(_products.c.sku).limit(limit)
        if after_sku is not None:
            query = query.where(_products.c.sku > after_sku)
        if stock_below is not None:
            query = query.where(_products.c.stock < stock_below)
        return [ProductRecord(**row._asdict()) for row in self.uow.execute(query)]

    def lock_stock(self, skus: Sequence[str]) -> dict[str, StockLevel]:
        """Lock the products' rows and read their stock: the one lock order of the package.

        Every writer of stock (orders, cancellations, stock events) calls this
        first, in the same transaction, and so takes its row locks in sku order:
        two writers queue for the rows they share instead of deadlocking.
        """
        rows = self.uow.execute(_LOCK_STOCK, {"skus": list(skus)})
        return {row.sku: StockLevel(row.id, row.price_cents, row.stock) for row in rows}

    def adjust_stock(self, deltas: Mapping[int, int]) -> None:
        """Add each product id's delta to its stock, in one statement (rows locked by caller)."""
        if not deltas:
            return
        change = values(column("id", BigInteger), column("delta", Integer), name="change").data(
            list(deltas.items())
        )
        self.uow.execute(
            update(_products)
            .where(_products.c.id == change.c.id)
            .values(stock=_products.c.stock + change.c.delta, updated_at=func.now())
        )


# -- orders -----------------------------------------------------------------------

_ORDER = _fields_of(_orders, OrderRecord)
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
# Hand-written because it saves round trips B2 measures: take the stock from
# the products (which the caller has locked and checked), insert the order and
# its lines in request order, and return them all, in one statement. The
# data-modifying CTEs all run, in one snapshot; the foreign keys (customer,
# products) are checked at the end. Rows as `_WITH_LINES` returns them.
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
        RETURNING id AS line_id, product_id, sku, quantity, unit_price_cents
    )
    SELECT placed.*, inserted.* FROM placed, inserted ORDER BY inserted.line_id
    """
).bindparams(
    bindparam("product_ids", type_=ARRAY(BigInteger)),
    bindparam("skus", type_=ARRAY(Text)),
    bindparam("quantities", type_=ARRAY(Integer)),
    bindparam("prices", type_=ARRAY(Integer)),
    bindparam("customer_id", type_=BigInteger),
    bindparam("total_cents", type_=BigInteger),
    bindparam("idempotency_key", type_=Text),
    bindparam("request_fingerprint", type_=Text),
)
_CANCEL_ORDER = (
    update(_orders)
    .where(_orders.c.id == bindparam("order_id"))
    .values(status="cancelled", cancelled_at=func.now())
    .returning(_orders.c.cancelled_at)
)


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


def _order(rows: Sequence[Row[*tuple[Any, ...]]]) -> OrderRecord:
    """An order from rows of its columns and one line's (`line_id` ...), lines in row order."""
    head = rows[0]
    lines = tuple(
        OrderLineRecord(
            id=row.line_id,
            product_id=row.product_id,
            sku=row.sku,
            quantity=row.quantity,
            unit_price_cents=row.unit_price_cents,
        )
        for row in rows
        if row.line_id is not None  # an order without lines (outer join)
    )
    return OrderRecord(
        id=head.id,
        customer_id=head.customer_id,
        status=head.status,
        total_cents=head.total_cents,
        idempotency_key=head.idempotency_key,
        request_fingerprint=head.request_fingerprint,
        created_at=head.created_at,
        cancelled_at=head.cancelled_at,
        lines=lines,
    )


# -- the stock-event ledger -------------------------------------------------------

_RECORDED = select(_stock_events.c.event_id).where(
    _stock_events.c.event_id == any_(bindparam("ids", type_=ARRAY(Text)))
)
# Hand-written because one round trip for both halves matters to B3 (see
# docs/design.md): insert the ledger rows, sorted by event id so that two
# transactions wait on each other's keys in one order, and move each product's
# stock by the sum of its events. An id already in the ledger fails the whole
# statement (LEDGER_KEY): nothing is recorded and no stock moves.
_RECORD_AND_APPLY = text(
    """
    WITH accepted AS (
        SELECT * FROM unnest(
            CAST(:event_ids AS text[]), CAST(:product_ids AS bigint[]),
            CAST(:deltas AS integer[]), CAST(:reasons AS text[]),
            CAST(:occurred_ats AS timestamptz[])
        ) AS e(event_id, product_id, delta, reason, occurred_at)
    ), recorded AS (
        INSERT INTO stock_events (event_id, product_id, delta, reason, occurred_at)
        SELECT event_id, product_id, delta, reason, occurred_at FROM accepted
        ORDER BY event_id
    )
    UPDATE products AS p SET stock = p.stock + moved.delta, updated_at = now()
    FROM (SELECT product_id, sum(delta) AS delta FROM accepted GROUP BY product_id) AS moved
    WHERE p.id = moved.product_id AND moved.delta <> 0
    """
).bindparams(
    bindparam("event_ids", type_=ARRAY(Text)),
    bindparam("product_ids", type_=ARRAY(BigInteger)),
    bindparam("deltas", type_=ARRAY(Integer)),
    bindparam("reasons", type_=ARRAY(Text)),
    bindparam("occurred_ats", type_=ARRAY(_stock_events.c.occurred_at.type)),
)


class NewStockEvent(NamedTuple):
    event_id: str
    product_id: int
    delta: int
    reason: str
    occurred_at: dt.datetime


class StockEventRepository:
    """The idempotency ledger: rows are only ever added (the role may not delete them)."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def recorded(self, event_ids: Sequence[str]) -> set[str]:
        """Which of these event ids the ledger already holds."""
        if not event_ids:
            return set()
        return set(self.uow.execute(_RECORDED, {"ids": list(event_ids)}).scalars())

    def record_and_apply(self, events: Sequence[NewStockEvent]) -> None:
        """Add the events' ledger rows and their deltas to the stock, in one statement.

        The caller holds the products' row locks and has decided the events.
        IntegrityError on LEDGER_KEY when an id is in the ledger already.
        """
        if not events:
            return
        self.uow.execute(
            _RECORD_AND_APPLY,
            {
                "event_ids": [e.event_id for e in events],
                "product_ids": [e.product_id for e in events],
                "deltas": [e.delta for e in events],
                "reasons": [e.reason for e in events],
                "occurred_ats": [e.occurred_at for e in events],
            },
        )
