"""Maintenance windows: one-off (start/end) or recurring (cron + duration) in a named time zone.

Recurring windows use APScheduler's CronTrigger (already a dependency) to find the latest start at or
before ``now``: the window is active when that start plus ``duration`` is still ahead. Daylight-saving
changes follow the zone, as cron does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from mailwarden.alerts.ports import WindowSettings


def _aware(value: datetime, zone: str) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=ZoneInfo(zone))


def occurrence(window: WindowSettings, now: datetime) -> tuple[datetime, datetime] | None:
    """(start, end) of the occurrence of ``window`` covering ``now``, in UTC; None when not active."""
    if window.cron:
        duration = timedelta(seconds=float(window.duration or 0))
        trigger = CronTrigger.from_crontab(window.cron, timezone=window.timezone)
        start = trigger.get_next_fire_time(None, now - duration)
        if start is None or start > now:
            return None
        return start.astimezone(UTC), (start + duration).astimezone(UTC)
    assert window.start is not None and window.end is not None  # validated by the config
    start, end = _aware(window.start, window.timezone), _aware(window.end, window.timezone)
    return (start.astimezone(UTC), end.astimezone(UTC)) if start <= now < end else None


def covers(window: WindowSettings, integrations: Iterable[str], tags: Iterable[str]) -> bool:
    if not window.integrations and not window.tags:
        return True
    return bool(set(window.integrations) & set(integrations)) or bool(set(window.tags) & set(tags))


class Maintenance:
    def __init__(self, windows: Sequence[WindowSettings]):
        self.windows = windows

    def __call__(self, integrations: Iterable[str], tags: Iterable[str], now: datetime) -> tuple[str, datetime] | None:
        """The active window covering any of these integrations (the one ending last), or None."""
        integrations, tags = list(integrations), list(tags)
        best: tuple[str, datetime] | None = None
        for w in self.windows:
            if not covers(w, integrations, tags):
                continue
            occ = occurrence(w, now)
            if occ is not None and (best is None or occ[1] > best[1]):
                best = (w.name, occ[1])
        return best
