"""What one run of a check found: its status (before the failure/success thresholds) and its outcome.

The kernel's types: every layer uses them, and they use nothing of mailwarden's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """Raw status of one result, before failure/success thresholds (DESIGN.md, Contracts)."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"
    BLOCKED = "blocked"


# Worst first: used to sort integrations and to pick an exit code.
SEVERITY_ORDER = {Status.FAIL: 0, Status.ERROR: 1, Status.WARN: 2, Status.BLOCKED: 3, Status.OK: 4}


@dataclass
class Outcome:
    status: Status
    code: str | None = None  # diagnosis code; None only for a plain ok
    summary: str = ""
    latency_ms: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. days_left, message_count
    transcript: list[str] = field(default_factory=list)  # redacted protocol lines, kept for failures
    raw: str | None = None  # redacted raw reply, kept for `unclassified`
    retry_after_s: float | None = None  # a throttled check asks the scheduler to wait this long
    # the target the server's back-off applies to (see ``targets``): every check on it waits, not only this one
    backoff_target: str | None = None
    recheck_s: float | None = None  # run this check again this soon, instead of at its interval

    @classmethod
    def ok(cls, summary: str, **kw: Any) -> Outcome:
        return cls(Status.OK, None, summary, **kw)
