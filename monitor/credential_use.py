"""Which credential the consuming system itself signs in with (issue 16): the evidence `secrets remove-old`, the
automated rotation, `mailwarden secrets` and the secrets page use before anyone calls an old secret unused.

Two sources, said with every answer (M365_FACTS.md, "What Graph can tell about the consuming system"):
- the sign-in log: an app-only sign-in names the credential it used (``servicePrincipalCredentialKeyId``, Graph
  beta). The poller stores the consuming system's own sign-ins, mailwarden's own left out by correlation id
  (``monitor.signins``), so a use of a key here is the consuming system's. Delegated sign-ins do not name it.
- the usage report ``reports/appCredentialSignInActivities`` (beta, P1/P2, global cloud): the last sign-in per
  credential, from any client, mailwarden's own included. A use is someone else's only when it came after
  mailwarden itself moved to the new credential; read on demand (remove-old, the automated removal), never stored.

"Nothing uses it" is said only on that evidence: where there is none, the answer is ``unknown``, with why and how to
make it known.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from mailwarden.monitor import signin_replies as replies
from mailwarden.monitor.config import Config
from mailwarden.monitor.signin_plan import SERVICE_PRINCIPAL, not_read, when

if TYPE_CHECKING:  # pragma: no cover
    from mailwarden.monitor.db import Store
    from mailwarden.monitor.signins import SignInEvidence

USED, UNUSED, UNKNOWN = "used", "unused", "unknown"
LOG, REPORT = "Entra ID sign-in log", "Entra ID usage report (appCredentialSignInActivities)"
REPORT_PATH = "reports/appCredentialSignInActivities"
# the usage report counts mailwarden's own sign-ins: one of the old key this long after mailwarden moved to the new
# key is someone else's (a token request in flight when the configuration changed is not)
MOVE_GRACE = timedelta(minutes=10)
MAX_ROWS = 5000  # stored sign-ins read per tenant and app


@dataclass(frozen=True)
class KeyUse:
    key_id: str
    last_at: datetime
    attempts: int = 0  # sign-in log: the consuming system's sign-ins with it in the window (failed ones too)
    failures: int = 0


@dataclass
class Evidence:
    """What one source says of an app's credentials, for the integrations it covers."""

    source: str
    covered_from: datetime | None  # sign-in log: read without a gap since then; report: None (its own window)
    keys: dict[str, KeyUse] = field(default_factory=dict)
    signins: int = 0  # sign-in log: the consuming system's sign-ins in the window, any credential


@dataclass(frozen=True)
class Verdict:
    state: str  # used | unused | unknown
    text: str  # one sentence, with its source


def _system(config: Config, app_name: str) -> str:
    names = sorted({i.system for i in config.integrations if i.app == app_name and i.system})
    return " / ".join(names) if names else "the consuming system"


def from_log(config: Config, store: Store, app_name: str, since: datetime) -> tuple[Evidence | None, list[str]]:
    """The sign-in log's evidence since ``since`` for the app's app-only integrations (the tenants they run in), and
    why it is unknown where it is (one sentence each)."""
    app = config.apps[app_name]
    tenants = sorted({config.tenant_name_of(i) for i in config.integrations
                      if i.app == app_name and i.flow == "app" and not i.paused})
    why: list[str] = []
    if not tenants:
        if any(i.app == app_name and i.flow == "delegated" for i in config.integrations):
            why.append("delegated sign-ins do not name the credential they used")
        return None, why
    evidence = Evidence(LOG, None)  # covered by the tenants read below; none read: no evidence
    for name in tenants:
        off = not_read(config, name)
        if off is not None:
            why.append(off)
            continue
        tid = config.tenants[name].tenant_id.lower()
        poll = store.signins.signin_polls(tid).get((tid, SERVICE_PRINCIPAL, app.client_id))
        if poll is None or poll.covered_from is None or poll.read_until is None:
            why.append(f"the sign-in log of tenant {name} has not been read yet")
            continue
        if poll.state != replies.OK:
            why.append(poll.note or f"the sign-in log of tenant {name} cannot be read ({poll.state})")
            continue
        covered = _aware(poll.covered_from)
        evidence.covered_from = max(evidence.covered_from or covered, covered)
        rows = store.signins.signins_of(tid, app.client_id, [SERVICE_PRINCIPAL], since=since, origins=["consumer"],
                                        limit=MAX_ROWS)
        evidence.signins += len(rows)
        for r in rows:
            if not r.credential_key_id:
                continue
            key = r.credential_key_id.lower()
            at = _aware(r.created_at)
            had = evidence.keys.get(key)
            evidence.keys[key] = KeyUse(key, max(at, had.last_at) if had else at, (had.attempts if had else 0) + 1,
                                        (had.failures if had else 0) + (1 if r.error_code else 0))
    if evidence.covered_from is None:
        return None, why
    return evidence, why


async def from_report(config: Config, signins: SignInEvidence | None, app_name: str) -> tuple[Evidence | None, str]:
    """The usage report's last use per key of the app, read in its home tenant (its credentials live there)."""
    app = config.apps[app_name]
    if signins is None:
        return None, "the usage report is read with the tenant's monitor_app, and sign-in evidence is off"
    got = await signins.read_report(app.tenant, REPORT_PATH, {"$filter": f"appId eq '{app.client_id}'"})
    if isinstance(got, replies.Refusal):
        return None, f"the usage report of tenant {app.tenant} cannot be read ({got.state}: {got.detail})"
    evidence = Evidence(REPORT, None)
    for row in got:
        key, at = str(row.get("keyId") or "").lower(), when((row.get("signInActivity") or {}).get(
            "lastSignInDateTime"))
        if key and at is not None:
            had = evidence.keys.get(key)
            evidence.keys[key] = KeyUse(key, max(at, had.last_at) if had else at)
    return evidence, ""


def judge(key_id: str, since: datetime, log: Evidence | None, report: Evidence | None, why: Iterable[str],
          *, system: str, moved_at: datetime | None) -> Verdict:
    """Whether the consuming system used credential ``key_id`` since ``since``: on the sign-in log first, else on
    the usage report (a use after ``moved_at``, when mailwarden itself moved to the new credential, is not
    mailwarden's), else unknown, saying why."""
    key = key_id.lower()
    if log is not None:
        use = log.keys.get(key)
        if use is not None and use.last_at >= since:
            failed = f", {use.failures} of them failed" if use.failures else ""
            return Verdict(USED, f"{system} signed in with it {use.attempts} time(s) since {_at(since)}{failed}, "
                                 f"last at {_at(use.last_at)} ({LOG})")
        if log.covered_from is not None and log.covered_from <= since and log.signins:
            others = ", ".join(sorted(k for k in log.keys if k != key)) or "no named credential"
            return Verdict(UNUSED, f"none of {system}'s {log.signins} sign-in(s) since {_at(since)} used it (they "
                                   f"used {others}; {LOG})")
        if log.covered_from is not None and log.covered_from <= since:
            why = [f"{system} has not signed in since {_at(since)} ({LOG}), so which credential it will use is "
                   "not known", *why]
        else:
            why = [f"the sign-in log is read only since {_at(log.covered_from)}" if log.covered_from else "", *why]
    if report is not None:
        use = report.keys.get(key)
        if use is not None and moved_at is not None and use.last_at > moved_at + MOVE_GRACE:
            return Verdict(USED, f"something other than mailwarden signed in with it at {_at(use.last_at)}, after "
                                 f"mailwarden moved to the new credential at {_at(moved_at)} ({REPORT}); "
                                 f"{system} is the likely user")
        if moved_at is not None:
            last = f"its last use was at {_at(use.last_at)}" if use is not None else "it has no recorded use"
            return Verdict(UNUSED, f"{last}, and nothing used it after mailwarden moved to the new credential at "
                                   f"{_at(moved_at)} ({REPORT})")
    reasons = "; ".join(w for w in why if w) or "no sign-in evidence is read for this app"
    return Verdict(UNKNOWN, f"whether {system} still uses it is unknown: {reasons}")


async def verdict(config: Config, store: Store, signins: SignInEvidence | None, app_name: str, key_id: str,
                  now: datetime, *, window_days: int, moved_at: datetime | None) -> Verdict:
    """`judge` on the evidence read now: the stored sign-in log, and the usage report where the log says nothing."""
    import asyncio

    since = now - timedelta(days=max(window_days, 1))
    log, why = await asyncio.to_thread(from_log, config, store, app_name, since)
    first = judge(key_id, since, log, None, why, system=_system(config, app_name), moved_at=moved_at)
    if first.state != UNKNOWN:
        return first
    report, problem = await from_report(config, signins, app_name)
    return judge(key_id, since, log, report, [*why, problem], system=_system(config, app_name), moved_at=moved_at)


def summary(config: Config, store: Store, app_name: str, now: datetime, days: int) -> dict[str, Any]:
    """For the secrets page and `mailwarden secrets`: per key, the consuming system's use in the stored sign-in log in
    the last ``days`` (at least one), and a note when the log says nothing (a page reads only the database)."""
    since = now - timedelta(days=max(days, 1))
    log, why = from_log(config, store, app_name, since)
    if log is None or log.covered_from is None:  # from_log returns None when no tenant's log is read
        return {"known": False, "keys": {}, "note": "; ".join(why) or "no sign-in evidence is read for this app"}
    return {"known": True, "since": log.covered_from if log.covered_from > since else since,
            "keys": {k: {"last_at": u.last_at, "attempts": u.attempts, "failures": u.failures}
                     for k, u in log.keys.items()},
            "note": "; ".join(why)}


def _aware(at: datetime) -> datetime:
    from datetime import UTC

    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _at(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M} UTC"
