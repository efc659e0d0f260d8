"""What the leader puts on the job queue in queue mode (``monitor.queue``), without importing the queue: the
scheduler imports this in local mode too."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

QUEUE = "checks"
TASK = "mailwarden.check"
TOKEN_PRIORITY = 10  # a token check is fetched before the mailbox checks that depend on it


def pair_key(integration: str, check: str) -> str:
    """The queueing lock of a check's jobs (at most one waits): the same key as its job in the leader's schedule."""
    return f"{integration}::{check}"


@dataclass(frozen=True)
class Due:
    """One check due at ``due_at``: what the leader enqueues."""

    integration: str
    check: str
    due_at: datetime
    priority: int = 0
    at: datetime | None = None  # not before (a re-check in a few seconds); None: at once

    def args(self) -> str:
        return json.dumps({"integration": self.integration, "check": self.check, "due_at": self.due_at.isoformat()})
