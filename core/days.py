"""Days until (or since) an end date, counted and worded one way for every surface: the check's summary, the
dashboard, the report, the secrets page and CLI, the alerts and reminders.

Whole days, never rounded up: 9.9 days left is 9 (never promise a day that is not there); ended 2.5 days ago is
"2 days ago". Once the end has passed the words are in the past tense, never "0 days left".
"""

from __future__ import annotations

import math
from datetime import datetime


def days_left(end: datetime, now: datetime) -> int:
    """Whole days left; after the end, minus the whole days since it (ended 2.5 days ago: -2; ended an hour ago: 0,
    so read ``expired(end, now)`` rather than the sign)."""
    return math.trunc((end - now).total_seconds() / 86400)


def expired(end: datetime, now: datetime) -> bool:
    return end <= now


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def count_words(n: int) -> str:
    """'1 day', '7 days'."""
    return _days(n)


def expiry_words(end: datetime, now: datetime) -> str:
    """'12 days left', 'less than a day left', 'expired today', 'expired 3 days ago'."""
    left = days_left(end, now)
    if expired(end, now):
        return "expired today" if left == 0 else f"expired {_days(-left)} ago"
    return "less than a day left" if left == 0 else f"{_days(left)} left"


def words_for(days: int | None, is_expired: bool) -> str:
    """The same words from a stored day count (``days_left`` of a row) and whether it has expired."""
    if days is None:
        return "no end date"
    if is_expired or days < 0:
        return "expired today" if days == 0 else f"expired {_days(abs(days))} ago"
    return "less than a day left" if days == 0 else f"{_days(days)} left"
