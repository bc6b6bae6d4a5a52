"""Request bodies of the API: every field bounded (length, pattern, range) before it reaches a service."""

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

Text = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
LongText = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]+$")]
Email = Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+\.[^@\s]+$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class CustomerIn(BaseModel):
    name: Text
    email: Email
    address: LongText
    tax_id: Annotated[str, StringConstraints(max_length=40, pattern=r"^[A-Za-z0-9 .\-]*$")] = ""


class LineIn(BaseModel):
    description: Text
    quantity: int = Field(ge=1, le=1_000_000)
    unit_price_minor: int = Field(ge=0, le=10**12)
    tax_rate_bp: int = Field(ge=0, le=10_000, description="tax rate in basis points (2000 = 20 %)")


class InvoiceIn(BaseModel):
    customer_id: int = Field(ge=1, le=2**62)
    currency: Currency
    lines: list[LineIn] = Field(min_length=1, max_length=100)


class CreditNoteIn(BaseModel):
    amount_minor: int = Field(ge=1, le=10**15)
    reason: Text


class CardIn(BaseModel):
    number: Annotated[str, StringConstraints(min_length=1, max_length=30)]
    exp_month: int = Field(ge=1, le=12)
    exp_year: int = Field(ge=2000, le=2100)

    def __repr__(self) -> str:
        return "CardIn(<redacted>)"


class StoredCardIn(CardIn):
    customer_id: int = Field(ge=1, le=2**62, description="the customer the card belongs to (TOK-03)")


class PaymentIn(BaseModel):
    card: CardIn | None = None
    token: Annotated[str, StringConstraints(max_length=40)] | None = None


class UserIn(BaseModel):
    username: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.-]{3,64}$")]
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class RoleIn(BaseModel):
    role: Annotated[str, StringConstraints(max_length=40)]


class LoginIn(BaseModel):
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class CodeIn(BaseModel):
    code: Annotated[str, StringConstraints(min_length=1, max_length=40)]


class PasswordIn(BaseModel):
    old_password: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    new_password: Annotated[str, StringConstraints(min_length=1, max_length=256)]
