"""Bounded parsing of what a request carries (path, query, form): a 400 for anything out of shape, never a
500 from an oversized or odd number.

Python's ``int()`` takes any Unicode digit ("٣", and ``str.isdigit`` is true for "²", which ``int()`` then
refuses) and up to 4,300 digits before it raises; a database integer holds 18 digits safely; a ``timedelta``
overflows past ~2.7 million years. These helpers accept ASCII digits only, bounded in length and in value.

- ``integer(text, lo=, hi=, what=)``: a whole number in [lo, hi] (a leading ``-`` only when lo < 0).
- ``{name:id}`` in a route path: 1 to 18 ASCII digits, converted to int (importing this module registers it);
  a longer number does not match the route (404) instead of failing in Starlette's ``int`` convertor (500).

Each raises ``BadParameter`` (an HTTPException 400 naming the field) where a 400 is the answer.
"""

from __future__ import annotations

import re

from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException

MAX_DIGITS = 18  # below 2**63: fits every database integer
_INT = re.compile(rf"-?[0-9]{{1,{MAX_DIGITS}}}")


class BadParameter(HTTPException):
    def __init__(self, detail: str):
        super().__init__(400, detail)


def integer(text: str | None, *, lo: int, hi: int, what: str) -> int:
    """A whole number from lo to hi, in ASCII digits; BadParameter (400) otherwise."""
    value = (text or "").strip()
    if not _INT.fullmatch(value) or (value.startswith("-") and lo >= 0):
        raise BadParameter(f"{what} must be a whole number from {lo} to {hi}")
    number = int(value)
    if not lo <= number <= hi:
        raise BadParameter(f"{what} must be a whole number from {lo} to {hi}")
    return number


class IdConvertor(Convertor[int]):
    """``{name:id}``: a database id in a path, 1 to 18 ASCII digits."""

    regex = f"[0-9]{{1,{MAX_DIGITS}}}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        if not 0 <= int(value) < 10**MAX_DIGITS:
            raise ValueError("an id is 0 to 18 digits")
        return str(int(value))


register_url_convertor("id", IdConvertor())
