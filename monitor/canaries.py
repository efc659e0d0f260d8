"""The canaries' log (``checks.base.CanaryLog``), read from the stored results: what the sending checks (smtp,
graph_mail with ``canary_to``) recorded of each canary they sent, and what a reading check (``canary`` option) found
in its mailbox in earlier runs. Nothing is stored beside the results: a canary is its sender's result's metrics
(``canary_tag``, ``canary_sent_at``, ``canary_to``), and an arrival is the reader's (``canaries_seen``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mailwarden.checks.base import CanarySent

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mailwarden.monitor.db import Store

SENDERS = ("smtp", "graph_mail")  # the checks that send canaries
MAX_ROWS = 500  # results read per check: a canary every minute for over eight hours


def _when(raw: object, fallback: datetime | None = None) -> datetime | None:
    if isinstance(raw, str):
        try:
            at = datetime.fromisoformat(raw)
        except ValueError:
            return fallback
    elif isinstance(raw, datetime):
        at = raw
    else:
        return fallback
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


class StoredCanaries:
    def __init__(self, store: Store):
        self.store = store

    def sent(self, integration: str, since: datetime) -> list[CanarySent]:
        found: dict[str, CanarySent] = {}
        for check in SENDERS:
            for row in self.store.checks.results(integration, check, since=since, limit=MAX_ROWS):
                details = row.details or {}
                tag = details.get("canary_tag")
                if not isinstance(tag, str) or not tag:
                    continue
                at = _when(details.get("canary_sent_at"), _when(row.checked_at))
                if at is not None and at >= since:
                    to = details.get("canary_to")
                    found[tag] = CanarySent(tag, at, to if isinstance(to, str) else None)
        return sorted(found.values(), key=lambda c: c.sent_at)

    def seen(self, integration: str, check: str, since: datetime) -> dict[str, datetime]:
        out: dict[str, datetime] = {}
        for row in self.store.checks.results(integration, check, since=since, limit=MAX_ROWS):
            seen = (row.details or {}).get("canaries_seen")
            if not isinstance(seen, dict):
                continue
            for tag, raw in seen.items():
                at = _when(raw)
                if isinstance(tag, str) and at is not None:
                    out.setdefault(tag, at)
        return out
