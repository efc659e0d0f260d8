"""Rotation tracking per credential, and which reminder stage is due: pure code taking ``now``.

``expiring -> new_secret_created -> in_use -> old_removed``, one ``Rotation`` row per old credential:
- expiring: the credential in use entered its reminder window (or a newer one appeared: see below);
- new_secret_created: the app has a newer credential of the same kind (a new keyId ending later);
- in_use: the configured secret's hint now matches that newer credential (the reference was updated; a
  changed reference string is noted in the audit);
- old_removed: the old keyId is gone from the app. Gone while still in use is a break, said so loudly.
Notices: "remove the old secret" once the new one has worked ``remove_old_after_days`` (its integrations'
token checks ok), and "stuck" when a new secret exists but the old one is still in use within 7 days of
its expiry. Each notice once per rotation (its time is recorded on the row).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mailwarden import days
from mailwarden.days import count_words as days_words
from mailwarden.monitor.credentials import AppCredential
from mailwarden.monitor.models import Rotation

STATES = ("expiring", "new_secret_created", "in_use", "old_removed")
STUCK_WINDOW = timedelta(days=7)


@dataclass
class Observation:
    """What one cycle sees of an app."""

    creds: list[AppCredential]  # on the app now
    in_use: AppCredential | None  # the configured credential, matched by hint / thumbprint
    reference: str | None  # mailwarden's reference string now
    healthy_since: datetime | None = None  # every integration's token check ok since then (None: not ok now)
    last_ok_at: datetime | None = None  # the oldest of their last successes (None: not all ok now)


@dataclass
class Step:
    step: str
    detail: str
    ok: bool = True
    notice: str | None = None  # remove_old | stuck | removed_in_use


@dataclass
class Advance:
    steps: list[Step] = field(default_factory=list)

    @property
    def notices(self) -> list[Step]:
        return [s for s in self.steps if s.notice]


def newer_of(row: Rotation, creds: list[AppCredential], kind: str) -> AppCredential | None:
    """The credential that can replace the old one: same kind, another keyId, ending later (latest first)."""
    far = datetime.max.replace(tzinfo=(row.old_expires_at.tzinfo if row.old_expires_at else None))
    old_end = row.old_expires_at
    candidates = [c for c in creds if c.kind == kind and c.key_id != row.key_id
                  and (old_end is None or (c.end_at or far) > old_end)]
    return max(candidates, key=lambda c: c.end_at or far, default=None)


def should_open(cred: AppCredential, creds: list[AppCredential], now: datetime, window_days: int) -> bool:
    """Track a credential in use once it nears expiry, or as soon as a newer one appears on its app."""
    if cred.end_at is None:
        return False
    if cred.end_at - now <= timedelta(days=window_days):
        return True
    return any(c.kind == cred.kind and c.key_id != cred.key_id and c.end_at and c.end_at > cred.end_at
               and c.start_at and cred.start_at and c.start_at > cred.start_at for c in creds)


def advance(row: Rotation, obs: Observation, now: datetime, remove_old_after_days: int,
            kind: str = "client_secret") -> Advance:
    """Move ``row`` as far as what is seen allows (several states in one cycle when a person was quick)."""
    out = Advance()
    if row.state == "old_removed":
        return out
    present = {c.key_id for c in obs.creds}
    new = newer_of(row, obs.creds, kind)
    if row.state == "expiring" and new is not None:
        _set_new(row, new, now)
        row.state = "new_secret_created"
        out.steps.append(Step("new_secret_created", f"a new {kind} appeared on the app: keyId {new.key_id}, "
                              f"hint {new.hint or '-'}..., ends {_d(new.end_at)}"))
    using_new = obs.in_use is not None and obs.in_use.key_id != row.key_id and obs.in_use.key_id in present \
        and (row.old_expires_at is None or obs.in_use.end_at is None or obs.in_use.end_at > row.old_expires_at)
    if row.state in ("expiring", "new_secret_created") and using_new:
        assert obs.in_use is not None
        _set_new(row, obs.in_use, now)
        row.state, row.in_use_at = "in_use", now
        changed = f"; the reference changed from {row.reference} to {obs.reference}" \
            if obs.reference and row.reference and obs.reference != row.reference else ""
        out.steps.append(Step("in_use", f"mailwarden's configured credential is now keyId {obs.in_use.key_id} "
                              f"(hint {obs.in_use.hint or '-'}...){changed}"))
    if row.key_id not in present:
        was = row.state
        row.state, row.removed_at = "old_removed", now
        if was == "in_use":
            out.steps.append(Step("old_removed", f"the old credential {row.key_id} was removed from the app"))
        else:
            out.steps.append(Step("old_removed", f"the old credential {row.key_id} was removed while the "
                                  "integrations still used it: they fail until the new secret is configured",
                                  ok=False, notice="removed_in_use"))
        return out
    if row.state == "in_use" and row.remind_remove_at is None and row.in_use_at is not None:
        worked = timedelta(days=remove_old_after_days)
        if obs.healthy_since is not None and now - max(row.in_use_at, obs.healthy_since) >= worked:
            row.remind_remove_at = now
            out.steps.append(Step("remind_remove_old", f"mailwarden's own checks have worked with the new credential "
                                  f"for {days_words(remove_old_after_days)}: the old one ({row.key_id}) can go once "
                                  "every consuming system is confirmed on the new one", notice="remove_old"))
    if (row.state == "new_secret_created" and row.stuck_alert_at is None and row.old_expires_at is not None
            and row.old_expires_at - now <= STUCK_WINDOW):
        row.stuck_alert_at = now
        out.steps.append(Step("stuck", f"a new secret exists (keyId {row.new_key_id}) but mailwarden's configured "
                              f"secret is still the old one, which expires {_d(row.old_expires_at)}",
                              ok=False, notice="stuck"))
    if out.steps:
        row.updated_at = now
    return out


def _set_new(row: Rotation, cred: AppCredential, now: datetime) -> None:
    if row.new_key_id != cred.key_id:
        row.new_key_id, row.new_hint, row.new_expires_at = cred.key_id, cred.hint, cred.end_at
        row.new_seen_at = row.new_seen_at or now


def _d(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d") if value else "never"


def current_stage(end: datetime | None, now: datetime, stages: Iterable[int]) -> int | None:
    """The most urgent stage due: the smallest stage >= the days left; 0 once expired (if 0 is a stage)."""
    wanted = set(stages)
    if end is None:
        return None
    if end <= now:
        return 0 if 0 in wanted else None
    left = days.days_left(end, now)
    due = [s for s in wanted if s > 0 and left <= s]
    return min(due) if due else None
