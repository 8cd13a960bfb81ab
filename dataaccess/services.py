"""Business rules as plain functions over a unit of work. Flask and Lambda only translate.

Each write service commits its own unit of work; a raised error leaves nothing
behind, because the unit of work rolls back whatever was not committed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError

from .errors import (
    AlreadyExistsError,
    CustomerNotFoundError,
    IdempotencyKeyReusedError,
    InsufficientStockError,
    InvalidRequestError,
    OrderNotFoundError,
    ProductNotFoundError,
)
from .ingest import apply_stock_event as apply_stock_event
from .records import CustomerRecord, OrderRecord, ProductRecord
from .records import StockEventIn as StockEventIn
from .repositories import NewLine, violated_constraint
from .tables import MAX_INT32
from .uow import UnitOfWork

MAX_ORDER_LINES = 100
MAX_LINE_QUANTITY = 10_000
MAX_PAGE_SIZE = 100
_UNIQUE_VIOLATION = "23505"
# Serialises requests that share a customer and an idempotency key (see place_order).
_ADVISORY_LOCK = select(func.pg_advisory_xact_lock(func.hashtextextended(bindparam("key"), 0)))


@dataclass(frozen=True)
class LineRequest:
    sku: str
    quantity: int


@dataclass(frozen=True)
class PlacedOrder:
    order: OrderRecord
    replayed: bool  # True when an earlier request with the same idempotency key made it


@dataclass(frozen=True)
class ProductPage:
    items: list[ProductRecord]
    next_after: str | None  # pass as `after` for the next page; None on the last page


# -- customers ------------------------------------------------------------------


def create_customer(uow: UnitOfWork, *, email: str, name: str) -> CustomerRecord:
    """Create a customer; the email is unique, compared case-insensitively."""
    email = email.strip().lower()
    if "@" not in email:
        raise InvalidRequestError("email must contain '@'")
    with _unique(f"a customer with email {email!r} already exists"):
        customer = uow.customers.add(email=email, name=name.strip())
    uow.commit()
    return customer


def get_customer(uow: UnitOfWork, customer_id: int) -> CustomerRecord:
    customer = uow.customers.get(customer_id)
    if customer is None:
        raise CustomerNotFoundError(f"no customer with id {customer_id}")
    return customer


# -- products -------------------------------------------------------------------


def create_product(
    uow: UnitOfWork, *, sku: str, name: str, price_cents: int, stock: int = 0
) -> ProductRecord:
    _check_range("price_cents", price_cents, 0, MAX_INT32)
    _check_range("stock", stock, 0, MAX_INT32)
    with _unique(f"a product with sku {sku!r} already exists"):
        product = uow.products.add(sku=sku, name=name, price_cents=price_cents, stock=stock)
    uow.commit()
    return product


def get_product(uow: UnitOfWork, sku: str) -> ProductRecord:
    product = uow.products.get_by_sku(sku)
    if product is None:
        raise ProductNotFoundError(sku)
    return product


def update_product(
    uow: UnitOfWork, sku: str, *, name: str | None = None, price_cents: int | None = None
) -> ProductRecord:
    """Change a product's name and/or price; stock moves only through orders and events."""
    if price_cents is not None:
        _check_range("price_cents", price_cents, 0, MAX_INT32)
    product = uow.products.update(sku, name=name, price_cents=price_cents)
    if product is None:
        raise ProductNotFoundError(sku)
    uow.commit()
    return product


def list_products(
    uow: UnitOfWork, *, after: str | None = None, limit: int = 50, stock_below: int | None = None
) -> ProductPage:
    """A page of products in sku order; keyset pagination, so pages stay stable under inserts."""
    _check_range("limit", limit, 1, MAX_PAGE_SIZE)
    if stock_below is not None:
        # Stock is never negative: below 0 (or 0) matches nothing, yet would read every product.
        _check_range("stock_below", stock_below, 1, MAX_INT32)
    # One more than the page holds: whether it comes back says whether a next page exists.
    fetched = uow.products.page(after_sku=after, limit=limit + 1, stock_below=stock_below)
    items = fetched[:limit]
    return ProductPage(items, items[-1].sku if len(fetched) > limit else None)


# -- orders ---------------------------------------------------------------------


def place_order(
    uow: UnitOfWork,
    *,
    customer_id: int,
    lines: Iterable[LineRequest],
    idempotency_key: str | None = None,
) -> PlacedOrder:
    """Reserve stock for every line and record the order: all lines or none, never below zero.

    With an idempotency key, a repeat of the same request returns the order the
    first one made; a different request under the same key is refused. Keys are
    the customer's own: another customer's same key is another order.
    """
    wanted = merge_lines(lines)
    fingerprint = request_fingerprint(customer_id, wanted)
    if idempotency_key is not None:
        # Serialise requests that share a customer and a key, so the second waits
        # for the first to commit and then finds its order instead of racing it.
        # The id has no ':', so "<customer>:<key>" is one lock per (customer, key).
        uow.execute(_ADVISORY_LOCK, {"key": f"{customer_id}:{idempotency_key}"})
        existing = uow.orders.get_by_idempotency_key(customer_id, idempotency_key)
        if existing is not None:
            if existing.request_fingerprint != fingerprint:
                raise IdempotencyKeyReusedError(
                    "this idempotency key was already used for a different order"
                )
            return PlacedOrder(existing, replayed=True)
    levels = uow.products.lock_stock(list(wanted))
    for sku, quantity in wanted.items():
        level = levels.get(sku)
        if level is None:
            raise ProductNotFoundError(sku)
        if level.stock < quantity:
            raise InsufficientStockError(sku, quantity, level.stock)
    try:
        order = uow.orders.place(
            customer_id=customer_id,
            total_cents=sum(levels[s].price_cents * q for s, q in wanted.items()),
            idempotency_key=idempotency_key,
            request_fingerprint=fingerprint,
            lines=[
                NewLine(levels[sku].id, sku, quantity, levels[sku].price_cents)
                for sku, quantity in wanted.items()
            ],
        )
    except IntegrityError as exc:
        # The foreign key checks the customer in the same statement as the insert:
        # one round trip less than asking first, and no window between the two.
        if violated_constraint(exc) == "fk_orders_customer_id_customers":
            raise CustomerNotFoundError(f"no customer with id {customer_id}") from exc
        raise
    uow.commit()
    return PlacedOrder(order, replayed=False)


def get_order(uow: UnitOfWork, order_id: int) -> OrderRecord:
    order = uow.orders.get(order_id)
    if order is None:
        raise OrderNotFoundError(f"no order with id {order_id}")
    return order


def cancel_order(uow: UnitOfWork, order_id: int) -> OrderRecord:
    """Cancel a placed order and return its stock; cancelling again changes nothing."""
    order = uow.orders.get(order_id, for_update=True)
    if order is None:
        raise OrderNotFoundError(f"no order with id {order_id}")
    if order.status == "cancelled":
        return order
    uow.products.lock_stock([line.sku for line in order.lines])
    uow.products.adjust_stock({line.product_id: line.quantity for line in order.lines})
    cancelled = uow.orders.mark_cancelled(order)
    uow.commit()
    return cancelled


# -- rules (pure: tested without a database in tests/unit) ----------------------


def merge_lines(lines: Iterable[LineRequest]) -> dict[str, int]:
    """Quantity per sku, in sku order (the order its rows are locked in), each within bounds."""
    wanted: dict[str, int] = {}
    for line in lines:
        _check_range(f"quantity of {line.sku}", line.quantity, 1, MAX_LINE_QUANTITY)
        wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
    if not 1 <= len(wanted) <= MAX_ORDER_LINES:
        raise InvalidRequestError(f"an order needs 1 to {MAX_ORDER_LINES} distinct skus")
    for sku, quantity in wanted.items():
        _check_range(f"total quantity of {sku}", quantity, 1, MAX_LINE_QUANTITY)
    return dict(sorted(wanted.items()))


def request_fingerprint(customer_id: int, wanted: dict[str, int]) -> str:
    """What makes two requests under one idempotency key the same order: customer and lines."""
    canonical = json.dumps([customer_id, sorted(wanted.items())], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- helpers --------------------------------------------------------------------


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidRequestError(f"{name} must be between {low} and {high}; got {value}")


@contextmanager
def _unique(message: str) -> Iterator[None]:
    """Turn a unique violation inside the block into AlreadyExistsError(message)."""
    try:
        yield
    except IntegrityError as exc:
        if getattr(exc.orig, "pgcode", None) == _UNIQUE_VIOLATION:
            raise AlreadyExistsError(message) from exc
        raise
