"""What the HTTP API accepts and returns (pydantic models).

Every input is bounded — lengths, ranges, decimal places, list sizes — so that no
request body can reach the database as something PostgreSQL rejects (a 500), or
as garbage it accepts. Unknown fields are rejected: a client cannot slip ``is_admin``
or ``version`` into an update (mass assignment).
"""

from __future__ import annotations

import unicodedata
import uuid
from decimal import Decimal
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
)


def storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and lone surrogates ("\ud800", legal in JSON)
    # cannot be encoded as UTF-8: both would fail deep in the driver as a 500.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (\\u0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogate code points)") from None
    return value


def single_line(value: str) -> str:
    # Control characters (tabs, escapes, "\x1f"…) in a name or title are never meant:
    # they break displays and logs, and make two names that look alike differ.
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ValueError("must not contain control characters (newlines, tabs, escapes)")
    return value


def Text(min_length: int, max_length: int, strip: bool = True, multiline: bool = False) -> object:
    """A string type that PostgreSQL can store, within the given lengths."""
    checks = (
        [AfterValidator(storable)]
        if multiline
        else [AfterValidator(storable), AfterValidator(single_line)]
    )
    return Annotated[
        str,
        StringConstraints(strip_whitespace=strip, min_length=min_length, max_length=max_length),
        *checks,
    ]


Name = Text(1, 100)
Password = Text(8, 128, strip=False, multiline=True)
Title = Text(1, 200)
Content = Text(1, 20_000, multiline=True)
Tag = Text(1, 50)
ProductId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# -- users --------------------------------------------------------------------------


class UserCreate(Strict):
    email: EmailStr = Field(max_length=254)
    name: Name  # type: ignore[valid-type]
    password: Password  # type: ignore[valid-type]


class UserUpdate(Strict):
    """The only field a user may change through the API; anything else is a 422."""

    name: Name  # type: ignore[valid-type]


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    name: str


class PublicUserOut(BaseModel):
    """What other users may see of someone."""

    id: uuid.UUID
    name: str


class LoginRequest(Strict):
    email: EmailStr = Field(max_length=254)
    password: Text(1, 128, strip=False, multiline=True)  # type: ignore[valid-type]


class TokenOut(BaseModel):
    accessToken: str
    tokenType: str = "bearer"
    expiresIn: int


# -- orders -------------------------------------------------------------------------

Money = Annotated[Decimal, Field(ge=0, le=Decimal("999999.99"), max_digits=8, decimal_places=2)]


class OrderItemIn(Strict):
    productId: ProductId
    quantity: int = Field(ge=1, le=1000)
    unitPrice: Money


class OrderCreate(Strict):
    items: list[OrderItemIn] = Field(min_length=1, max_length=100)
    paymentMethod: Annotated[
        str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Z_]+$")
    ]


class OrderOut(BaseModel):
    orderId: uuid.UUID
    status: str
    # Money travels as a decimal *string* ("109.97"): a JSON float would round it.
    totalAmount: Decimal


# -- search -------------------------------------------------------------------------

SearchQuery = Text(1, 200)


class SearchHit(BaseModel):
    id: uuid.UUID
    type: str = "post"
    title: str
    rank: float


class SearchResults(BaseModel):
    query: str
    results: list[SearchHit]
