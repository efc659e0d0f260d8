"""People's side of incidents, shared by the CLI and the web app: an incident as JSON, and when a snooze ends."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from mailwarden.checks import diagnoses

MAX_SNOOZE = timedelta(days=30)
_FOR = re.compile(r"\s*([0-9]{1,9}(?:\.[0-9]{1,6})?)\s*(m|h|d)\s*", re.ASCII)


def parse_until(until: str | None, for_: str | None, now: datetime) -> datetime:
    if (until is None) == (for_ is None):
        raise ValueError("give exactly one of --until or --for")
    if for_ is not None:
        m = _FOR.fullmatch(for_)
        if not m:
            raise ValueError(f"--for {for_[:40]!r}: use e.g. 30m, 2h, 3d")
        seconds = float(m.group(1)) * {"m": 60, "h": 3600, "d": 86400}[m.group(2)]
        if seconds > MAX_SNOOZE.total_seconds():  # before timedelta: 10**9 days would overflow it
            raise ValueError("a snooze lasts at most 30 days")
        end = now + timedelta(seconds=seconds)
    else:
        assert until is not None  # exactly one of the two is given
        try:
            end = datetime.fromisoformat(until.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"--until {until[:40]!r} is not an ISO 8601 time (e.g. 2030-01-07T18:00+01:00)") from None
        if end.tzinfo is None:
            raise ValueError("--until needs a UTC offset (e.g. 2030-01-07T18:00+01:00 or ...Z)")
    if end <= now:
        raise ValueError("the snooze must end in the future")
    if end - now > MAX_SNOOZE:
        raise ValueError("a snooze lasts at most 30 days")
    return end.astimezone(UTC)


def incident_json(inc: Any) -> dict[str, Any]:
    """An incident as `mailwarden incidents --format json` and `/api/incidents` give it (one shape for both)."""

    def iso(v):
        return v.astimezone(UTC).isoformat().replace("+00:00", "Z") if v else None

    return {"id": inc.id, "kind": inc.kind, "code": inc.code, "title": diagnoses.get(inc.code).title,
            "integrations": list(inc.affected) or sorted({m["integration"] for m in inc.members}),
            "checks": sorted({f"{m['integration']}/{m['check']}" for m in inc.members}),
            "opened_at": iso(inc.opened_at), "notified_at": iso(inc.notified_at), "reminders": inc.reminders,
            "ack_by": inc.ack_by, "ack_at": iso(inc.ack_at), "snoozed_until": iso(inc.snoozed_until),
            "status": inc.status}
