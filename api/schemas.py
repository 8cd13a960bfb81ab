"""Declared request and response models: they validate requests and generate the OpenAPI doc."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from dataaccess.services import MAX_INT32, MAX_LINE_QUANTITY, MAX_ORDER_LINES, MAX_PAGE_SIZE

MAX_BIGINT = 2**63 - 1
DEFAULT_PAGE_SIZE = 50
SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

# Text without control characters: PostgreSQL refuses NUL in text, and the
# rest has no business in a name.
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
Sku = Annotated[str, StringConstraints(pattern=SKU_PATTERN)]
# ASCII only: lower-casing non-ASCII text can change its length past the column's.
Email = Annotated[
    str,
    StringConstraints(max_length=254, pattern=r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+$"),
]
Cents = Annotated[int, Field(ge=0, le=MAX_INT32)]


class Body(BaseModel):
    """A JSON request body: exact types, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


# -- requests -------------------------------------------------------------------


class CustomerIn(Body):
    email: Email
    name: Name


class ProductIn(Body):
    sku: Sku
    name: Name
    price_cents: Cents
    stock: Cents = 0


class ProductPatch(Body):
    """Name and/or price; stock moves only through orders and stock events."""

    name: Name | None = None
    price_cents: Cents | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> ProductPatch:
        if self.name is None and self.price_cents is None:
            raise ValueError("give name and/or price_cents")
        return self


class ProductQuery(BaseModel):
    """Keyset pagination: pass the previous page's `next` back as `next`."""

    model_config = ConfigDict(extra="ignore")

    limit: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    next: str | None = Field(None, max_length=200, description="cursor from the previous page")
    # stock >= 0, so stock below 0 could never match, yet would read every product.
    stock_below: int | None = Field(
        None, ge=1, le=MAX_INT32, description="only products with stock below this value"
    )

    @field_validator("next")
    @classmethod
    def _cursor_decodes(cls, value: str | None) -> str | None:
        if value is not None:
            decode_cursor(value)
        return value


class LineIn(Body):
    sku: Sku
    quantity: int = Field(ge=1, le=MAX_LINE_QUANTITY)


class OrderIn(Body):
    customer_id: int = Field(ge=1, le=MAX_BIGINT)
    lines: list[LineIn] = Field(min_length=1, max_length=MAX_ORDER_LINES)


class OrderHeaders(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    idempotency_key: str | None = Field(
        None,
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="repeat a request safely: the same key returns the same order",
    )


# -- responses ------------------------------------------------------------------


class CustomerOut(BaseModel):
    id: int
    email: str
    name: str
    created_at: dt.datetime


class ProductOut(BaseModel):
    sku: str
    name: str
    price_cents: int
    stock: int


class ProductPageOut(BaseModel):
    items: list[ProductOut]
    next: str | None = Field(description="cursor for the next page; null on the last page")


class LineOut(BaseModel):
    sku: str
    quantity: int
    unit_price_cents: int


class OrderOut(BaseModel):
    id: int
    customer_id: int
    status: str
    total_cents: int
    lines: list[LineOut]
    created_at: dt.datetime
    cancelled_at: dt.datetime | None


class Health(BaseModel):
    status: str


class Problem(BaseModel):
    """RFC 9457 problem details (served as application/problem+json)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None
    sku: str | None = None


# -- the pagination cursor ------------------------------------------------------


def encode_cursor(sku: str) -> str:
    """Opaque to clients: today the last sku of the page, base64url-encoded."""
    return base64.urlsafe_b64encode(sku.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        sku = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a cursor this API issued") from None
    if not re.fullmatch(SKU_PATTERN, sku):
        raise ValueError("not a cursor this API issued")
    return sku
