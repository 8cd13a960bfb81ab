"""Business rules as plain functions over a unit of work. Flask and Lambda only translate.

Each write service commits its own unit of work; a raised error leaves nothing
behind, because the unit of work rolls back whatever was not committed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
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
from .ingest import StockEventIn as StockEventIn
from .ingest import apply_stock_event as apply_stock_event
from .models import MAX_INT32, Customer, Order, Product
from .uow import UnitOfWork

MAX_ORDER_LINES = 100
MAX_LINE_QUANTITY = 10_000
MAX_PAGE_SIZE = 100
_UNIQUE_VIOLATION = "23505"


@dataclass(frozen=True)
class LineRequest:
    sku: str
    quantity: int


@dataclass(frozen=True)
class PlacedOrder:
    order: Order
    replayed: bool  # True when an earlier request with the same idempotency key made it


@dataclass(frozen=True)
class ProductPage:
    items: list[Product]
    next_after: str | None  # pass as `after` for the next page; None on the last page


# -- customers ------------------------------------------------------------------


def create_customer(uow: UnitOfWork, *, email: str, name: str) -> Customer:
    """Create a customer; the email is unique, compared case-insensitively."""
    email = email.strip().lower()
    if "@" not in email:
        raise InvalidRequestError("email must contain '@'")
    customer = Customer(email=email, name=name.strip())
    uow.customers.add(customer)
    _flush_unique(uow, f"a customer with email {email!r} already exists")
    uow.commit()
    return customer


def get_customer(uow: UnitOfWork, customer_id: int) -> Customer:
    customer = uow.customers.get(customer_id)
    if customer is None:
        raise CustomerNotFoundError(f"no customer with id {customer_id}")
    return customer


# -- products -------------------------------------------------------------------


def create_product(
    uow: UnitOfWork, *, sku: str, name: str, price_cents: int, stock: int = 0
) -> Product:
    _check_range("price_cents", price_cents, 0, MAX_INT32)
    _check_range("stock", stock, 0, MAX_INT32)
    product = Product(sku=sku, name=name, price_cents=price_cents, stock=stock)
    uow.products.add(product)
    _flush_unique(uow, f"a product with sku {sku!r} already exists")
    uow.commit()
    return product


def get_product(uow: UnitOfWork, sku: str) -> Product:
    product = uow.products.get_by_sku(sku)
    if product is None:
        raise ProductNotFoundError(sku)
    return product


def update_product(
    uow: UnitOfWork, sku: str, *, name: str | None = None, price_cents: int | None = None
) -> Product:
    """Change a product's name and/or price; stock moves only through orders and events."""
    product = get_product(uow, sku)
    if name is not None:
        product.name = name
    if price_cents is not None:
        _check_range("price_cents", price_cents, 0, MAX_INT32)
        product.price_cents = price_cents
    uow.commit()
    return product


def list_products(
    uow: UnitOfWork, *, after: str | None = None, limit: int = 50, stock_below: int | None = None
) -> ProductPage:
    """A page of products in sku order; keyset pagination, so pages stay stable under inserts."""
    _check_range("limit", limit, 1, MAX_PAGE_SIZE)
    rows = uow.products.page(after_sku=after, limit=limit + 1, stock_below=stock_below)
    items = rows[:limit]
    return ProductPage(items, items[-1].sku if len(rows) > limit else None)


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
    first one made; a different request under the same key is refused.
    """
    wanted = _merge_lines(lines)
    fingerprint = _fingerprint(customer_id, wanted)
    if idempotency_key is not None:
        # Serialise requests that share a key, so the second waits for the first
        # to commit and then finds its order instead of racing it.
        uow.session.execute(
            select(func.pg_advisory_xact_lock(func.hashtextextended(idempotency_key, 0)))
        )
        existing = uow.orders.get_by_idempotency_key(idempotency_key)
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
    uow.products.adjust_stock({levels[s].id: -q for s, q in wanted.items()})
    try:
        order = uow.orders.insert(
            customer_id=customer_id,
            total_cents=sum(levels[s].price_cents * q for s, q in wanted.items()),
            idempotency_key=idempotency_key,
            request_fingerprint=fingerprint,
            lines=[
                {
                    "product_id": levels[sku].id,
                    "sku": sku,
                    "quantity": quantity,
                    "unit_price_cents": levels[sku].price_cents,
                }
                for sku, quantity in wanted.items()
            ],
        )
    except IntegrityError as exc:
        # The foreign key checks the customer in the same statement as the insert:
        # one round trip less than asking first, and no window between the two.
        if _constraint(exc) == "fk_orders_customer_id_customers":
            raise CustomerNotFoundError(f"no customer with id {customer_id}") from exc
        raise
    uow.commit()
    return PlacedOrder(order, replayed=False)


def get_order(uow: UnitOfWork, order_id: int) -> Order:
    order = uow.orders.get(order_id)
    if order is None:
        raise OrderNotFoundError(f"no order with id {order_id}")
    return order


def cancel_order(uow: UnitOfWork, order_id: int) -> Order:
    """Cancel a placed order and return its stock; cancelling again changes nothing."""
    order = uow.orders.get(order_id, for_update=True)
    if order is None:
        raise OrderNotFoundError(f"no order with id {order_id}")
    if order.status == "cancelled":
        return order
    uow.products.lock_stock([line.sku for line in order.lines])
    uow.products.adjust_stock({line.product_id: line.quantity for line in order.lines})
    order.status = "cancelled"
    order.cancelled_at = dt.datetime.now(dt.UTC)
    uow.commit()
    return order


# -- helpers --------------------------------------------------------------------


def _merge_lines(lines: Iterable[LineRequest]) -> dict[str, int]:
    wanted: dict[str, int] = {}
    for line in lines:
        _check_range(f"quantity of {line.sku}", line.quantity, 1, MAX_LINE_QUANTITY)
        wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
    if not 1 <= len(wanted) <= MAX_ORDER_LINES:
        raise InvalidRequestError(f"an order needs 1 to {MAX_ORDER_LINES} distinct skus")
    for sku, quantity in wanted.items():
        _check_range(f"total quantity of {sku}", quantity, 1, MAX_LINE_QUANTITY)
    return dict(sorted(wanted.items()))


def _fingerprint(customer_id: int, wanted: dict[str, int]) -> str:
    canonical = json.dumps([customer_id, sorted(wanted.items())], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidRequestError(f"{name} must be between {low} and {high}; got {value}")


def _constraint(exc: IntegrityError) -> str | None:
    diag = getattr(exc.orig, "diag", None)
    return getattr(diag, "constraint_name", None)


def _flush_unique(uow: UnitOfWork, message: str) -> None:
    try:
        uow.session.flush()
    except IntegrityError as exc:
        if getattr(exc.orig, "pgcode", None) == _UNIQUE_VIOLATION:
            raise AlreadyExistsError(message) from exc
        raise
