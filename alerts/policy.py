"""Incidents from transitions, and which notices they deserve: pure code, no I/O, ``now`` passed in.

Keys (one open incident per key): one incident per cause, whatever number of checks it breaks.
- ``cred:<client_id>:<credential>:<code>`` for failures of an app credential (``CREDENTIAL_CODES``): one expired
  secret used by three integrations is one incident naming all three: the integrations whose configured
  credential is that one (its hint or certificate thumbprint), not every integration of the app (two config
  entries on one app registration with two secrets are two credentials).
- ``acct:<tenant>:<client_id>:<account>:<code>`` for a delegated account's sign-in failures (``ACCOUNT_CODES``): a
  revoked user is one incident across all its integrations (they share its refresh token: one
  reauthorisation fixes them all).
- ``net:*:idp_unreachable``: the sign-in service is one host for every tenant: one outage, one incident.
- ``monitor:<tenant>:<code>``: the tenant's monitor app cannot read credentials: one incident for the tenant's
  secret_expiry checks.
- ``int:<integration>:<code>`` otherwise: (integration, root diagnosis). Mailbox checks of a failing token
  are ``blocked`` and open nothing, so a revoked refresh token is one incident, not one per protocol.
- ``net:<tenant or *>:<code>``: most integrations of a tenant (or of every tenant) failing with the same
  network/IdP code within the correlation window; one ``grouped`` notice naming how many.
- ``flap:<integration>:<check>``: a check changing state ``flapping.transitions`` times within
  ``flapping.window``; one ``flapping`` notice, then quiet until no change for a whole window.
- The consuming system's own sign-in failure (``consumer_signin_failed``, checks.consumer) is keyed by its cause
  (``Change.cause``: the catalog's diagnosis of the consumer's AADSTS code, the credential it presented, its account)
  as mailwarden's own failure of that cause is: the Oracle B2C Service mailbox whose refresh token was revoked and
  mailwarden's token check of the same account are one ``acct:`` incident; Agiloft and mailwarden failing on the
  same expired secret one ``cred:`` incident. A credential failure whose credential is not known stays the
  integration's own. While only consuming systems fail in such an incident its code is ``consumer_signin_failed``
  (their fix, in that system); once a mailwarden check fails in it too, the cause's code (whose fix covers both).

Opened on the transition to fail/error (the state machine has applied the failure threshold); ``warn``
and ``blocked`` open nothing; ``blocked`` resolves nothing either (nothing is known), nor does a ``warn`` that says
nothing is known or nothing is fine (``UNJUDGED``: the consumer check cannot read the sign-in log, or sees failures
it cannot call fatal). Resolved when its last failing member recovers (after the success threshold), is paused, or
leaves the config. Network codes hold their opening notice for the correlation window so that an outage gives one
grouped alert. An incident opened and resolved before its notice was due says nothing. Reminders every
``reminder_interval`` while open, unless acknowledged or snoozed. Maintenance windows hold opening notices and
reminders; when the window ends one summary lists what happened in it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from mailwarden.alerts.records import Incident

BAD = frozenset({"fail", "error"})
GOOD = frozenset({"ok", "warn"})
CREDENTIAL_CODES = frozenset({"secret_expired", "secret_invalid", "certificate_invalid", "app_disabled",
                              "app_not_found", "tenant_not_found", "credential_not_found"})
NETWORK_CODES = frozenset({"idp_unreachable", "dns_error", "tls_error", "connection_refused", "timeout",
                           "service_unavailable"})
# A delegated account's sign-in failures: the same for every integration of that account on that app.
ACCOUNT_CODES = frozenset({"refresh_token_revoked", "refresh_token_expired", "refresh_token_invalid",
                           "public_client_token", "no_refresh_token", "signin_frequency", "mfa_required",
                           "user_disabled", "user_locked", "password_expired", "user_not_assigned",
                           "conditional_access_blocked", "security_defaults_blocked", "wrong_account"})
# A warn with one of these codes is no recovery: nothing is known (the sign-in log cannot be read), or the consuming
# system still fails in a way not known to be fatal. It neither opens nor resolves, like ``blocked``.
UNJUDGED = frozenset({"consumer_unknown", "consumer_signin_failed"})
# Codes whose incident key is their cause's (``Cause``), not their own
CAUSED = frozenset({"consumer_signin_failed"})
# Causes about one credential: keyed by the credential the consuming system presented
CREDENTIAL_CAUSES = frozenset({"secret_expired", "secret_invalid", "certificate_invalid"})
# Resolutions that get a notice; the others were never announced on their own or are told otherwise.
SPOKEN = frozenset({"recovered", "removed", "paused", "stable"})
NOTICE_KINDS = ("opened", "reminder", "resolved", "grouped", "flapping", "maintenance_summary", "test")


@dataclass(frozen=True)
class CheckInfo:
    """What the config says about one (integration, check)."""

    integration: str
    check: str
    tenant: str
    client_id: str
    tags: tuple[str, ...] = ()
    paused: bool = False
    flow: str = "app"
    account: str | None = None
    credential: str | None = None  # the configured credential: "hint:<first 3>" or "cert:<thumbprint>"


@dataclass(frozen=True)
class Cause:
    """What a failure of the consuming system itself is about (``CAUSED`` codes; ``cause_of`` reads it from the
    result): the catalog's diagnosis of its AADSTS code, the credential it presented (``hint:<3>`` or
    ``cert:<thumbprint>``) when known, its account (delegated)."""

    code: str
    credential: str | None = None
    account: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """As an incident's member keeps it (``_stable`` keys the member again from it)."""
        return {"code": self.code, "credential": self.credential, "account": self.account}

    @classmethod
    def from_dict(cls, raw: Any) -> Cause | None:
        return _cause(raw, "code", "credential", "account") if isinstance(raw, Mapping) else None


def cause_of(code: str | None, details: Mapping[str, Any] | None) -> Cause | None:
    """The cause a stored result of a ``CAUSED`` code names in its details (checks.consumer's metrics ``cause``,
    ``cause_credential``, ``cause_account``); None for another code, or a cause the catalog does not know."""
    if code not in CAUSED or not details:
        return None
    return _cause(details, "cause", "cause_credential", "cause_account")


def _cause(raw: Mapping[str, Any], code: str, credential: str, account: str) -> Cause | None:
    said, cred, acct = raw.get(code), raw.get(credential), raw.get(account)
    if not isinstance(said, str) or not said or said in ("unclassified", "unknown"):
        return None
    return Cause(said, cred if isinstance(cred, str) and cred else None,
                 acct.lower() if isinstance(acct, str) and acct else None)


@dataclass(frozen=True)
class Change:
    """A Transition as the policy needs it."""

    id: int
    integration: str
    check: str
    from_status: str
    to_status: str
    code: str | None
    at: datetime
    silent: bool = False
    cause: Cause | None = None  # a CAUSED code's cause (the dispatcher reads it from the result: ``cause_of``)


@dataclass(frozen=True)
class PolicyConfig:
    reminder_interval: timedelta = timedelta(hours=4)
    flap_transitions: int = 4
    flap_window: timedelta = timedelta(hours=1)
    correlation_window: timedelta = timedelta(minutes=5)
    correlation_min: int = 2
    # (integrations, tags, now) -> (window name, window end) when a maintenance window covers them
    maintenance: Callable[[Iterable[str], Iterable[str], datetime], tuple[str, datetime] | None] = \
        lambda _i, _t, _n: None


@dataclass
class Notice:
    kind: str
    incident: Incident | None
    sequence: int = 1
    # maintenance_summary: the window and the incidents it held
    window: str | None = None
    window_end: datetime | None = None
    incidents: list[Incident] = field(default_factory=list)

    @property
    def key(self) -> str:
        if self.incident is None and self.kind == "test":
            return f"test/{self.window}/{self.window_end:%Y%m%dT%H%M%SZ}/1"
        if self.incident is None:
            return f"maintenance/{self.window}/{self.window_end:%Y%m%dT%H%M%SZ}/{self.kind}/{self.sequence}"
        return f"{self.incident.id}/{self.kind}/{self.sequence}"


def incident_key(info: CheckInfo | None, integration: str, code: str,
                 cause: Cause | None = None) -> tuple[str, str]:
    """The cause a failure belongs to (see the module's docstring): its incident key and kind. A ``CAUSED`` code
    (the consuming system's own failure) takes its cause's key, as mailwarden's own failure of that cause would."""
    if code in CAUSED and cause is not None and info is not None:
        return _caused_key(info, integration, cause) or (f"int:{integration}:{code}", "single")
    if code in CREDENTIAL_CODES and info is not None:
        return f"cred:{info.client_id}:{info.credential or '*'}:{code}", "credential"
    if code in ACCOUNT_CODES and info is not None and info.flow == "delegated" and info.account:
        return f"acct:{info.tenant}:{info.client_id}:{info.account.lower()}:{code}", "account"
    if code == "idp_unreachable":
        return f"net:*:{code}", "grouped"
    if code == "graph_unreadable" and info is not None and info.check == "secret_expiry":
        return f"monitor:{info.tenant}:{code}", "monitor"
    return f"int:{integration}:{code}", "single"


def _caused_key(info: CheckInfo, integration: str, cause: Cause) -> tuple[str, str] | None:
    """The key of mailwarden's own failure with ``cause``, for the consuming system's failure with it; None when the
    two cannot be known to be the same (a credential failure whose credential is not known)."""
    if cause.code in CREDENTIAL_CAUSES:
        if cause.credential is None:
            return None
        subject = replace(info, credential=cause.credential)
    else:
        subject = replace(info, account=cause.account or info.account)
    return incident_key(subject, integration, cause.code)


def _subject(info: CheckInfo | None, cause: Cause | None) -> CheckInfo | None:
    """The check as the cause's incident sees it: on the credential the consuming system presented, as its account."""
    if info is None or cause is None:
        return info
    if cause.code in CREDENTIAL_CAUSES and cause.credential:
        return replace(info, credential=cause.credential)
    return replace(info, account=cause.account or info.account)


def affected_by(kind: str, info: CheckInfo | None, checks: Iterable[CheckInfo]) -> list[str]:
    """Every integration a cause breaks, from the config: the ones on the same credential, or of the same account."""
    if info is None:
        return []
    if kind == "credential":
        return sorted({c.integration for c in checks if c.client_id == info.client_id
                       and (info.credential is None or c.credential == info.credential)})
    if kind == "account":
        return sorted({c.integration for c in checks if c.client_id == info.client_id and c.flow == "delegated"
                       and (c.account or "").lower() == (info.account or "").lower()})
    return []


def _pair(m: dict) -> tuple[str, str]:
    return m["integration"], m["check"]


class Policy:
    def __init__(self, cfg: PolicyConfig, checks: dict[tuple[str, str], CheckInfo], now: datetime):
        self.cfg = cfg
        self.checks = checks
        self.now = now
        self.open: dict[str, Incident] = {}
        self.touched: list[Incident] = []
        self.notices: list[Notice] = []
        self._reasons: dict[int, str] = {}

    # -- bookkeeping ---------------------------------------------------------------------------
    def _touch(self, inc: Incident) -> Incident:
        if not any(inc is t for t in self.touched):
            self.touched.append(inc)
        return inc

    def _new(self, key: str, kind: str, code: str, at: datetime, info: CheckInfo | None,
             notify_after: datetime) -> Incident:
        affected = affected_by(kind, info, self.checks.values())
        inc = Incident(key=key, kind=kind, code=code, tenant=info.tenant if info else None,
                       client_id=info.client_id if info else None, status="open", members=[], affected=affected,
                       opened_at=at, notify_after=notify_after, reminders=0, sequence=0)
        self.open[key] = inc
        return self._touch(inc)

    def _containing(self, pair: tuple[str, str]) -> list[Incident]:
        return [i for i in self.open.values() if any(_pair(m) == pair for m in i.members)]

    def _set_member(self, inc: Incident, ch: Change) -> None:
        others = [m for m in inc.members if _pair(m) != (ch.integration, ch.check)]
        old = next((m for m in inc.members if _pair(m) == (ch.integration, ch.check)), None)
        since = old["since"] if old and old["status"] in BAD and ch.to_status in BAD else ch.at.isoformat()
        member = {"integration": ch.integration, "check": ch.check, "status": ch.to_status, "code": ch.code,
                  "since": since, "changed": ch.at.isoformat(), "transition_id": ch.id}
        if ch.cause is not None:
            member["cause"] = ch.cause.as_dict()
        inc.members = [*others, member]
        if inc.kind not in ("credential", "account") or ch.code in CAUSED:
            inc.affected = sorted({m["integration"] for m in inc.members} | set(inc.affected))
        self._recode(inc)
        self._touch(inc)

    @staticmethod
    def _recode(inc: Incident) -> None:
        """An incident that holds a consuming system's own failure (``CAUSED``): the cause's code while a mailwarden
        check fails in it too (its fix covers mailwarden and the system), else the consuming system's code (its fix
        is in that system; mailwarden's token may be fine)."""
        if inc.kind == "flapping" or not any(m.get("code") in CAUSED for m in inc.members):
            return
        failing = [m for m in inc.members if m.get("status") in BAD]
        own = next((m["code"] for m in failing if m.get("code") and m["code"] not in CAUSED), None)
        if own is not None:
            inc.code = own
        elif failing:
            inc.code = failing[0]["code"]

    def _drop_member(self, inc: Incident, pair: tuple[str, str], reason: str, at: datetime) -> None:
        inc.members = [m for m in inc.members if _pair(m) != pair]
        self._recode(inc)
        self._touch(inc)
        if not inc.members:
            self._resolve(inc, reason, at)

    def _resolve(self, inc: Incident, reason: str, at: datetime) -> None:
        inc.status, inc.resolved_at, inc.resolve_reason = "resolved", at, reason
        self.open.pop(inc.key, None)
        self._touch(inc)

    def _notice(self, kind: str, inc: Incident) -> None:
        inc.sequence += 1
        inc.last_notice_at = self.now
        self.notices.append(Notice(kind, inc, inc.sequence))

    def _held(self, inc: Incident) -> tuple[str, datetime] | None:
        names = set(inc.affected) | {m["integration"] for m in inc.members}
        tags = {t for c in self.checks.values() if c.integration in names for t in c.tags}
        return self.cfg.maintenance(sorted(names), sorted(tags), self.now)

    # -- the steps -----------------------------------------------------------------------------
    def apply(self, incidents: Iterable[Incident], changes: Iterable[Change],
              recent: dict[tuple[str, str], list[datetime]]) -> tuple[list[Incident], list[Notice]]:
        """Fold ``changes`` (oldest first) into the ``incidents`` (open ones, and resolved ones still
        held by a maintenance window), then run the time-driven rules. Returns what changed and the
        notices to send."""
        held_resolved = []
        for inc in incidents:
            if inc.status == "open":
                self.open[inc.key] = inc
            else:
                held_resolved.append(inc)
        for ch in changes:
            if not ch.silent:
                self._change(ch, recent.get((ch.integration, ch.check), []))
        self._correlate()
        self._tick()
        self._summaries([*self.open.values(), *held_resolved, *[t for t in self.touched if t.status != "open"]])
        return self.touched, self.notices

    def _change(self, ch: Change, times: list[datetime]) -> None:
        pair = (ch.integration, ch.check)
        flap = self.open.get(f"flap:{ch.integration}:{ch.check}")
        if flap is not None:
            self._set_member(flap, ch)  # quiet until stable
            return
        window_start = ch.at - self.cfg.flap_window
        if ch.to_status != "paused" and sum(window_start < t <= ch.at for t in times) >= self.cfg.flap_transitions:
            for inc in self._containing(pair):
                self._drop_member(inc, pair, "flapping", ch.at)
            inc = self._new(f"flap:{ch.integration}:{ch.check}", "flapping", ch.code or ch.to_status, ch.at,
                            self.checks.get(pair), ch.at)
            self._set_member(inc, ch)
            return
        if ch.to_status in BAD:
            code = ch.code or ch.to_status
            info = self.checks.get(pair)
            key, kind = incident_key(info, ch.integration, code, ch.cause)
            for inc in self._containing(pair):
                if inc.key != key:
                    self._drop_member(inc, pair, "superseded", ch.at)
            target = self.open.get(key)
            if target is None:
                hold = self.cfg.correlation_window if code in NETWORK_CODES else timedelta(0)
                target = self._new(key, kind, code, ch.at, _subject(info, ch.cause) if code in CAUSED else info,
                                   ch.at + hold)
                if kind == "grouped":
                    target.tenant = None  # one cause across tenants
            self._set_member(target, ch)
        elif ch.to_status == "warn" and ch.code in UNJUDGED:
            return  # nothing known, or not known to be fine: it neither opens nor resolves
        elif ch.to_status in GOOD or ch.to_status == "paused":
            reason = "paused" if ch.to_status == "paused" else "recovered"
            for inc in self._containing(pair):
                self._drop_member(inc, pair, reason, ch.at)
        # blocked: not run, so nothing is known: it neither opens nor resolves

    def _correlate(self) -> None:
        active = [c for c in self.checks.values() if not c.paused]
        for inc in self.open.values():
            # a cause already grouped (the sign-in service): announced at once when most integrations fail with it,
            # else after the correlation window, as a lone network failure is
            if inc.kind == "grouped" and inc.notified_at is None and inc.key.startswith("net:*:"):
                names = {m["integration"] for m in inc.members}
                if len(names) >= self.cfg.correlation_min and len(names) * 2 > len({c.integration for c in active}):
                    inc.notify_after = min(inc.notify_after or self.now, self.now)
        candidates = [i for i in self.open.values() if i.kind == "single" and i.code in NETWORK_CODES
                      and i.notified_at is None]
        if not candidates:
            return
        by_code: dict[str, list[Incident]] = defaultdict(list)
        for inc in candidates:
            by_code[inc.code].append(inc)
        for code, incs in by_code.items():
            tenants = {i.tenant for i in incs}
            names = {m["integration"] for i in incs for m in i.members}
            everyone = {c.integration for c in active}
            if (len(tenants) > 1 and len(names) * 2 > len(everyone)) or f"net:*:{code}" in self.open:
                self._group(f"net:*:{code}", None, code, incs)
                continue
            for tenant in tenants:
                mine = [i for i in incs if i.tenant == tenant]
                names = {m["integration"] for i in mine for m in i.members}
                total = len({c.integration for c in active if c.tenant == tenant})
                existing = self.open.get(f"net:{tenant}:{code}")
                if existing is not None or (len(names) >= self.cfg.correlation_min and len(names) * 2 > total):
                    self._group(f"net:{tenant}:{code}", tenant, code, mine)

    def _group(self, key: str, tenant: str | None, code: str, incs: list[Incident]) -> None:
        group = self.open.get(key)
        if group is None:
            group = self._new(key, "grouped", code, min(i.opened_at for i in incs), None, self.now)
            group.tenant = tenant
        for inc in incs:
            group.members = [*group.members, *inc.members]
            group.affected = sorted(set(group.affected) | {m["integration"] for m in inc.members})
            inc.members = []
            self._resolve(inc, "merged", self.now)

    def _announce(self, inc: Incident, kind: str) -> None:
        """Send the opening notice now, or let a maintenance window hold it for its summary."""
        if inc.notified_at is not None or inc.held_window is not None:
            return
        if not self._hold(inc):
            inc.notified_at = self.now
            self._notice(kind, inc)

    def _hold(self, inc: Incident) -> bool:
        """Whether a maintenance window holds the incident's notice back (for its summary); it records which."""
        held = self._held(inc)
        if held is None:
            return False
        inc.held_window, inc.held_until = held
        self._touch(inc)
        return True

    def _tick(self) -> None:
        now = self.now
        for inc in list(self.open.values()):
            for m in list(inc.members):
                if _pair(m) not in self.checks:
                    self._drop_member(inc, _pair(m), "removed", now)
            if inc.status != "open":
                continue
            if inc.kind == "flapping":
                last = max(datetime.fromisoformat(m["changed"]) for m in inc.members)
                if now - last >= self.cfg.flap_window:
                    self._stable(inc, last)
                else:
                    self._announce(inc, "flapping")
                continue
            if inc.notified_at is None:
                if inc.notify_after is None or now >= inc.notify_after:
                    self._announce(inc, "grouped" if inc.kind == "grouped" else "opened")
                continue
            quiet = inc.ack_at is not None or (inc.snoozed_until is not None and inc.snoozed_until > now)
            due = inc.last_notice_at is None or now - inc.last_notice_at >= self.cfg.reminder_interval
            if quiet or not due or inc.held_window is not None:
                continue
            if not self._hold(inc):
                inc.reminders += 1
                self._notice("reminder", inc)
        for inc in list(self.touched):
            if (inc.status == "resolved" and inc.notified_at is not None and inc.resolve_reason in SPOKEN
                    and not any(n.incident is inc and n.kind == "resolved" for n in self.notices)):
                self._notice("resolved", inc)

    def _stable(self, inc: Incident, last: datetime) -> None:
        m = max(inc.members, key=lambda m: m["changed"])
        if m["status"] not in BAD:
            self._resolve(inc, "stable", self.now)
            return
        # Still failing once it settled: the flapping notice is replaced by an ordinary incident.
        self._resolve(inc, "stable-bad", self.now)
        info = self.checks.get(_pair(m))
        code = m["code"] or m["status"]
        cause = Cause.from_dict(m.get("cause")) if code in CAUSED else None
        key, kind = incident_key(info, m["integration"], code, cause)
        new = self.open.get(key) or self._new(key, kind, code, last,
                                              _subject(info, cause) if code in CAUSED else info, self.now)
        self._set_member(new, Change(m.get("transition_id") or 0, m["integration"], m["check"], "", m["status"],
                                     m["code"], last, cause=cause))
        self._announce(new, "opened")

    def _summaries(self, incidents: Iterable[Incident]) -> None:
        groups: dict[tuple[str, datetime], list[Incident]] = defaultdict(list)
        seen: set[int] = set()
        for inc in incidents:
            if id(inc) in seen or inc.held_window is None or inc.held_until is None or inc.held_until > self.now:
                continue
            seen.add(id(inc))
            groups[(inc.held_window, inc.held_until)].append(inc)
        for (window, end), incs in sorted(groups.items(), key=lambda kv: kv[0][1]):
            self.notices.append(Notice("maintenance_summary", None, 1, window=window, window_end=end,
                                       incidents=sorted(incs, key=lambda i: i.opened_at)))
            for inc in incs:
                inc.held_window = inc.held_until = None
                if inc.status == "open":
                    inc.notified_at = inc.notified_at or self.now
                    inc.last_notice_at = self.now
                self._touch(inc)
