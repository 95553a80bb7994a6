"""What the HTTP API accepts and returns (pydantic models).

Every input is bounded — lengths, ranges, decimal places, list sizes — so that no
request body can reach the database as something PostgreSQL rejects (a 500), or
as garbage it accepts. Unknown fields are rejected: a client cannot slip ``is_admin``
or ``version`` into an update (mass assignment).

What the validators check, the JSON schema says (a ``pattern`` per kind of text, money
as a decimal string), so the OpenAPI document accepts exactly what the API accepts:
schemathesis sends what the document allows and expects it accepted (and the reverse).
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from decimal import Decimal
from typing import Annotated, Any

import email_validator
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
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


# The same rules as regular expressions, for the JSON schema only (the validators above
# say why in their messages): no NUL; on one line, no control character (category Cc);
# stripped, at least one character that is not whitespace. Lone surrogates are refused
# too, but a JSON schema pattern cannot name them portably.
NO_NUL = r"\u0000"
NO_CONTROL = r"\u0000-\u001f\u007f-\u009f"


def text_pattern(strip: bool, multiline: bool) -> str:
    forbidden = NO_NUL if multiline else NO_CONTROL
    if strip:
        return rf"^[^{forbidden}]*[^\s{forbidden}][^{forbidden}]*$"
    return rf"^[^{forbidden}]*$"


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
        Field(json_schema_extra={"pattern": text_pattern(strip, multiline)}),
    ]


def email_address(value: str) -> str:
    # The syntax of an address (RFC 5322's dot-atom, as JSON schema's "email" format),
    # normalized; any domain, even a reserved one (example.test): the shop sends no mail
    # to check it by, and refusing what the documented format allows would be a surprise.
    try:
        checked = email_validator.validate_email(
            value, check_deliverability=False, globally_deliverable=False, test_environment=True
        )
    except email_validator.EmailNotValidError as exc:
        raise ValueError(f"value is not a valid email address: {exc}") from None
    return checked.normalized


Email = Annotated[
    str,
    StringConstraints(max_length=254),
    AfterValidator(email_address),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": 254}),
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
    email: Email
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
    # Any text: an address that cannot exist simply matches no account (401).
    email: Text(1, 254)  # type: ignore[valid-type]
    password: Text(1, 128, strip=False, multiline=True)  # type: ignore[valid-type]


class TokenOut(BaseModel):
    accessToken: str
    tokenType: str = "bearer"
    expiresIn: int


# -- orders -------------------------------------------------------------------------

MONEY_PATTERN = r"^[0-9]{1,6}(\.[0-9]{1,2})?$"


def decimal_string(value: Any) -> Any:
    # A JSON number is a binary float on most clients: 0.1 + 0.2 is not 0.3 there, so
    # an amount must come as the exact decimal it means, as the API returns it.
    if not isinstance(value, str) or not re.fullmatch(MONEY_PATTERN, value):
        raise ValueError(
            f'an amount is a decimal string like "29.99" (0 to 999999.99, at most 2 decimal'
            f" places), not {type(value).__name__} {value!r:.40}"
        )
    return value


Money = Annotated[
    Decimal,
    Field(ge=0, le=Decimal("999999.99"), max_digits=8, decimal_places=2),
    BeforeValidator(decimal_string),
    WithJsonSchema({"type": "string", "pattern": MONEY_PATTERN, "examples": ["29.99"]}),
]


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
