"""Bounded parsing of what a request carries (path, query, form): a 400 for anything out of shape, never a
500 from an oversized or odd number.

Python's ``int()`` takes any Unicode digit ("٣", and ``str.isdigit`` is true for "²", which ``int()`` then
refuses) and up to 4,300 digits before it raises; a database integer holds 18 digits safely; a ``timedelta``
overflows past ~2.7 million years. These helpers accept ASCII digits only, bounded in length and in value.

- ``integer(text, lo=, hi=, what=)``: a whole number in [lo, hi] (a leading ``-`` only when lo < 0).
- ``text(value, max_len=, what=)``: a line of text (a search, a filter's value): trimmed, then at most ``max_len``
  characters and no control character inside (Unicode's Cc and Cf categories: NUL, ESC, a tab or a line break, a
  bidirectional override); refused with a message naming the field and the limit, never cut silently.
- ``choice(value, allowed, what=)``: one of ``allowed``, or None with the message saying what was ignored.
- ``{name:id}`` in a route path: 1 to 18 ASCII digits, converted to int (importing this module registers it);
  a longer number does not match the route (404) instead of failing in Starlette's ``int`` convertor (500).

Each raises ``BadParameter`` (an HTTPException 400 naming the field) where a 400 is the answer.
"""

from __future__ import annotations

import re
import unicodedata

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


def text(value: str | None, *, max_len: int, what: str) -> str:
    """A line of text, trimmed: at most ``max_len`` characters and no control character; BadParameter (400)
    otherwise. None and "" give ""."""
    value = (value or "").strip()
    if len(value) > max_len:
        raise BadParameter(f"{what} is {len(value):,} characters long; at most {max_len:,} are taken")
    bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Cf")), None)
    if bad is not None:
        raise BadParameter(f"{what} holds a control character (U+{ord(bad):04X}); only printable text is taken")
    return value


def choice(value: str | None, allowed: tuple[str, ...], *, what: str) -> tuple[str | None, str | None]:
    """(value, None) when ``value`` is one of ``allowed``; (None, None) when it is empty; (None, a message saying
    it was ignored and what is allowed) otherwise. Whatever was sent, the message quotes at most 40 characters."""
    value = (value or "").strip()
    if not value:
        return None, None
    if value in allowed:
        return value, None
    shown = value[:40] + ("..." if len(value) > 40 else "")
    return None, f"{what} {shown!r} is not known and was ignored: one of {', '.join(allowed)}"


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
