"""POST /customers, GET /customers/<id>."""

from __future__ import annotations

from flask import Blueprint, request
from spectree import Response as Responses

from dataaccess import services
from dataaccess.records import CustomerRecord

from .auth import require_admin, require_customer
from .db import get_uow
from .openapi import output_only, spec
from .schemas import MAX_BIGINT, CustomerIn, CustomerOut, Problem

bp = Blueprint("customers", __name__, url_prefix="/customers")


def customer_out(customer: CustomerRecord) -> CustomerOut:
    return CustomerOut(
        id=customer.id, email=customer.email, name=customer.name, created_at=customer.created_at
    )


@bp.post("")
@spec.validate(
    json=CustomerIn,
    resp=Responses(
        HTTP_201=CustomerOut,
        HTTP_409=(Problem, "the email is taken (`already-exists`)"),
        HTTP_422=(Problem, "a field is missing, of the wrong type or out of range"),
    ),
    tags=["customers"],
)
def create_customer() -> tuple[CustomerOut, int, dict[str, str]]:
    """Create a customer; the email is unique (case-insensitive)."""
    body: CustomerIn = request.context.json  # type: ignore[attr-defined]
    require_admin()
    customer = services.create_customer(get_uow(), email=body.email, name=body.name)
    return customer_out(customer), 201, {"Location": f"/customers/{customer.id}"}


@bp.get(f"/<int(min=1, max={MAX_BIGINT}):customer_id>")
@output_only(
    resp=Responses(HTTP_200=CustomerOut, HTTP_404=(Problem, "no such customer")),
    tags=["customers"],
)
def get_customer(customer_id: int) -> CustomerOut:
    """One customer by id."""
    require_customer(customer_id)
    return customer_out(services.get_customer(get_uow(), customer_id))
