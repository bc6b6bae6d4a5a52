"""Money in the staff UI: stored and sent to the API in minor units, read and typed by people in major units.

Each currency keeps its real number of minor-unit digits (ISO 4217, from Babel's CLDR data):
JPY 0, EUR 2, BHD 3. An amount is never rounded: an entry with more decimals than its currency
has is refused.
"""

from __future__ import annotations

import re
from decimal import Decimal

from babel.numbers import format_currency, get_currency_precision, is_currency

LOCALE = "en"
# offered in the invoice form; any ISO 4217 code Babel knows is accepted
COMMON_CURRENCIES = ("EUR", "GBP", "USD", "CHF", "SEK", "JPY", "BHD")


def digits(currency: str) -> int:
    """The currency's minor-unit digits; ValueError for a code that is not an ISO 4217 currency."""
    if not is_currency(currency):
        raise ValueError(f"{currency!r} is not an ISO 4217 currency code: use one such as EUR, GBP or JPY")
    return get_currency_precision(currency)


def money(amount_minor: int | None, currency: str, locale: str = LOCALE) -> str:
    """``12345, "EUR"`` -> ``€123.45``; ``12345, "JPY"`` -> ``¥12,345``; ``12345, "BHD"`` -> ``BHD12.345``."""
    if amount_minor is None:
        return ""
    currency = currency.strip()
    if not is_currency(currency):
        return f"{amount_minor} {currency} (minor units)"  # never guess the decimal point
    value = Decimal(amount_minor).scaleb(-get_currency_precision(currency))
    return format_currency(value, currency, locale=locale, currency_digits=True)


_AMOUNT = re.compile(r"\d{1,15}(?:\.\d+)?")


def to_minor(text: str, currency: str) -> int:
    """A typed amount in major units (``"1,234.50"``) -> minor units (``123450`` for EUR)."""
    places = digits(currency)
    t = text.strip().replace(",", "").replace(" ", "")
    if not _AMOUNT.fullmatch(t):
        return _refuse("enter an amount such as 1234.50 (digits and one decimal point)")
    value = Decimal(t)
    decimals = -int(value.as_tuple().exponent)
    if decimals > places:
        what = "no decimal places" if places == 0 else f"at most {places} decimal places"
        return _refuse(f"{currency} amounts have {what}")
    minor = int(value.scaleb(places))
    if minor > 10**12:
        return _refuse("amount too large")
    return minor


def percent_to_bp(text: str) -> int:
    """A typed tax rate in percent (``"7.5"``) -> basis points (``750``)."""
    t = text.strip().rstrip("%").strip()
    if not re.fullmatch(r"\d{1,3}(?:\.\d{1,2})?", t) or Decimal(t) > 100:
        return _refuse("enter a rate from 0 to 100 percent, with at most two decimals (e.g. 20 or 7.5)")
    return int(Decimal(t) * 100)


def _refuse(message: str) -> int:
    raise ValueError(message)
