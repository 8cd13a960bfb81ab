"""POST /products, GET /products (keyset pages), GET and PATCH /products/<sku>."""

from __future__ import annotations

import re

from flask import Blueprint, request
from spectree import Response as Responses

from dataaccess import services
from dataaccess.errors import ProductNotFoundError
from dataaccess.records import ProductRecord

from .auth import require_admin
from .db import get_uow
from .openapi import output_only, spec
from .schemas import (
    SKU_PATTERN,
    Problem,
    ProductIn,
    ProductOut,
    ProductPageOut,
    ProductPatch,
    ProductQuery,
    decode_cursor,
    encode_cursor,
)

bp = Blueprint("products", __name__, url_prefix="/products")
_SKU = re.compile(SKU_PATTERN)


def product_out(product: ProductRecord) -> ProductOut:
    return ProductOut(
        sku=product.sku, name=product.name, price_cents=product.price_cents, stock=product.stock
    )


def _known_shape(sku: str) -> str:
    # A sku that could never have been created is simply not found; it also
    # keeps NUL bytes and the like away from the driver.
    if not _SKU.fullmatch(sku):
        raise ProductNotFoundError(sku[:64])
    return sku


@bp.post("")
@spec.validate(
    json=ProductIn,
    resp=Responses(
        HTTP_201=ProductOut,
        HTTP_409=(Problem, "the sku is taken (`already-exists`)"),
        HTTP_422=(Problem, "a field is missing, of the wrong type or out of range"),
    ),
    tags=["products"],
)
def create_product() -> tuple[ProductOut, int, dict[str, str]]:
    """Create a product; the sku is unique."""
    body: ProductIn = request.context.json  # type: ignore[attr-defined]
    require_admin()
    product = services.create_product(
        get_uow(), sku=body.sku, name=body.name, price_cents=body.price_cents, stock=body.stock
    )
    return product_out(product), 201, {"Location": f"/products/{product.sku}"}


@bp.get("")
@spec.validate(
    query=ProductQuery,
    resp=Responses(
        HTTP_200=ProductPageOut,
        HTTP_422=(Problem, "`limit` or `stock_below` out of range, or `next` not a cursor"),
    ),
    tags=["products"],
)
def list_products() -> ProductPageOut:
    """Products in sku order, `limit` at a time (at most 100); follow `next` for more."""
    query: ProductQuery = request.context.query  # type: ignore[attr-defined]
    page = services.list_products(
        get_uow(),
        after=decode_cursor(query.next) if query.next else None,
        limit=query.limit,
        stock_below=query.stock_below,
    )
    return ProductPageOut(
        items=[product_out(p) for p in page.items],
        next=encode_cursor(page.next_after) if page.next_after else None,
    )


@bp.get("/<sku>")
@output_only(
    resp=Responses(HTTP_200=ProductOut, HTTP_404=(Problem, "no such product")), tags=["products"]
)
def get_product(sku: str) -> ProductOut:
    """One product by sku."""
    return product_out(services.get_product(get_uow(), _known_shape(sku)))


@bp.patch("/<sku>")
@spec.validate(
    json=ProductPatch,
    resp=Responses(
        HTTP_200=ProductOut,
        HTTP_404=(Problem, "no such product"),
        HTTP_422=(Problem, "neither name nor price_cents given, or one is invalid"),
    ),
    tags=["products"],
)
def update_product(sku: str) -> ProductOut:
    """Change a product's name and/or price."""
    body: ProductPatch = request.context.json  # type: ignore[attr-defined]
    require_admin()
    product = services.update_product(
        get_uow(), _known_shape(sku), name=body.name, price_cents=body.price_cents
    )
    return product_out(product)
