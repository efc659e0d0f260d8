"""Durations as the configuration writes them: '5m', '30s', '1.5h', '2d', '250ms', compounds such as '1h30m', '2d12h'
or '1m30s' (units from the largest to the smallest, each once), or a number of seconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator

_N = r"\d+(?:\.\d+)?"
# The whole form: a bare number (seconds), or parts with units in the order d, h, m, s, ms, each at most once. Written
# in the syntax Python and JSON Schema (ECMA-262) share, so the configuration's schema uses it as it is (PATTERN).
PATTERN = (rf"^\s*(?:{_N}|(?=\d)(?:{_N}\s*d)?\s*(?:{_N}\s*h)?\s*(?:{_N}\s*m(?!s))?\s*(?:{_N}\s*s)?\s*"
           rf"(?:{_N}\s*ms)?)\s*$")
_WHOLE = re.compile(PATTERN)
_PART = re.compile(rf"({_N})\s*(ms|d|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
EXAMPLES = "30s, 5m, 1h30m, 2d"


def parse_duration(value: Any) -> float:
    """'5m', '30s', '1.5h', '2d', '250ms', '1h30m', '2d12h' or a number of seconds -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value)
        if not _WHOLE.match(text):
            raise ValueError(f"not a duration: {value!r} (use e.g. {EXAMPLES}; units d, h, m, s, ms from the largest "
                             "to the smallest, each once)")
        parts = _PART.findall(text)
        seconds = sum(float(n) * _UNITS[unit] for n, unit in parts) if parts else float(text)
    if seconds <= 0:
        raise ValueError("a duration must be greater than zero")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
