"""POST /orders (idempotent with Idempotency-Key), GET /orders/<id>, POST /orders/<id>/cancel."""

from __future__ import annotations

from flask import Blueprint, request
from spectree import Response as Responses

from dataaccess import services
from dataaccess.records import OrderRecord
from dataaccess.services import MAX_LINE_QUANTITY

from .auth import require_customer
from .db import get_uow
from .openapi import output_only, spec
from .schemas import MAX_BIGINT, LineOut, OrderHeaders, OrderIn, OrderOut, Problem

bp = Blueprint("orders", __name__, url_prefix="/orders")
ORDER_ID = f"<int(min=1, max={MAX_BIGINT}):order_id>"


def order_out(order: OrderRecord) -> OrderOut:
    return OrderOut(
        id=order.id,
        customer_id=order.customer_id,
        status=order.status,
        total_cents=order.total_cents,
        lines=[
            LineOut(sku=line.sku, quantity=line.quantity, unit_price_cents=line.unit_price_cents)
            for line in order.lines
        ],
        created_at=order.created_at,
        cancelled_at=order.cancelled_at,
    )


@bp.post("")
@spec.validate(
    json=OrderIn,
    headers=OrderHeaders,
    resp=Responses(
        HTTP_201=(OrderOut, "placed, or replayed for a repeated Idempotency-Key and body"),
        HTTP_404=(Problem, "no such customer, or no product with a line's sku"),
        HTTP_409=(Problem, "not enough stock for a line (`insufficient-stock`, names the `sku`)"),
        HTTP_422=(
            Problem,
            f"a field is invalid, a sku's quantities add up past {MAX_LINE_QUANTITY} "
            "(`invalid-request`), or "
            "the Idempotency-Key was used with another body (`idempotency-key-reused`)",
        ),
    ),
    tags=["orders"],
)
def place_order() -> tuple[OrderOut, int, dict[str, str]]:
    """Reserve stock for every line, all or nothing; 409 names a SKU short of stock.

    With an Idempotency-Key, a retry gets the same order and the same 201; the
    same key with a different body is a 422.
    """
    body: OrderIn = request.context.json  # type: ignore[attr-defined]
    headers: OrderHeaders = request.context.headers  # type: ignore[attr-defined]
    require_customer(body.customer_id)
    placed = services.place_order(
        get_uow(),
        customer_id=body.customer_id,
        lines=[services.LineRequest(line.sku, line.quantity) for line in body.lines],
        idempotency_key=headers.idempotency_key,
    )
    response_headers = {"Location": f"/orders/{placed.order.id}"}
    if placed.replayed:
        response_headers["Idempotent-Replayed"] = "true"
    return order_out(placed.order), 201, response_headers


@bp.get(f"/{ORDER_ID}")
@output_only(
    resp=Responses(HTTP_200=OrderOut, HTTP_404=(Problem, "no such order")), tags=["orders"]
)
def get_order(order_id: int) -> OrderOut:
    """One order with its lines."""
    order = services.get_order(get_uow(), order_id)
    require_customer(order.customer_id)
    return order_out(order)


@bp.post(f"/{ORDER_ID}/cancel")
@output_only(
    resp=Responses(
        HTTP_200=(OrderOut, "cancelled now, or before"), HTTP_404=(Problem, "no such order")
    ),
    tags=["orders"],
)
def cancel_order(order_id: int) -> OrderOut:
    """Cancel an order and return its stock; cancelling again changes nothing."""
    uow = get_uow()
    require_customer(services.get_order(uow, order_id).customer_id)
    return order_out(services.cancel_order(uow, order_id))
