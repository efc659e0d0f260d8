"""Mail-flow evidence (issue 16 item 2): what the mailbox shows about the consuming system, not about mailwarden.

mailwarden's own checks prove that its token and its mailbox access work; a consuming system that stopped collecting
mail is invisible to them. Its mailbox shows it: mail waits uncollected. Every receiving check (imap, pop, ews,
graph_mail) reads the age of the oldest uncollected message when ``backlog_age`` is set (off by default):

- older than ``backlog_age``: `warn` ``inbox_backlog`` (a poller that is late, restarted or throttled catches up);
- older than ``backlog_age`` + ``backlog_grace``: `fail` ``consumer_not_collecting`` (an incident): a consumer that
  stopped collecting is an outage of the integration, whatever mailwarden's own access says.

``backlog_grace`` defaults to 1 hour, as the consumer check's ``silent_grace``: long enough for a restart, a
maintenance window or Exchange's throttling of the consumer to pass without an incident, short enough that customers'
mail is not left unanswered for a working morning. What counts as uncollected: IMAP, the oldest unseen message of the
folder; Graph and EWS, the oldest unread message of the inbox; POP (no read flags), message 1, the oldest in the
maildrop, dated by its Received header (the receiving server's time), else its Date header.

IMAP's and Graph's ``backlog_warn`` (a duration) is the old name of ``backlog_age`` and still taken (``renamed``)
with its old meaning: it warns and never fails (no grace), so an upgrade opens no incident its configuration did not
ask for; ``validate`` says so and suggests ``backlog_age``. POP's ``backlog_warn`` stays what it was: a count of
messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mailwarden.checks.base import SEVERITY_ORDER, CanarySent, Status
from mailwarden.durations import Duration

DEFAULT_GRACE_S = 3600.0
_MAX_S = 90.0 * 86400  # a backlog threshold past three months is a typo (mail is long gone by then)
RENAMED = {"backlog_warn": "backlog_age"}  # old option name -> new one (imap, graph_mail)


class BacklogOptions(BaseModel):
    """The backlog options every receiving check takes (mixed into its options model)."""

    # the oldest uncollected message older than this -> warn inbox_backlog (off when unset)
    backlog_age: Duration | None = Field(None, le=_MAX_S)
    # older than backlog_age + this -> fail consumer_not_collecting (an incident); None: warn only (the old name)
    backlog_grace: Duration | None = Field(DEFAULT_GRACE_S, le=_MAX_S)


class UnsearchedBacklogOptions(BacklogOptions):
    """POP's and EWS's options: no ``canary`` (POP cannot search a maildrop without downloading it; the EWS check
    does not search): a clear error instead of "unknown key"."""

    @model_validator(mode="before")
    @classmethod
    def _no_canary(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "canary" in data:
            raise ValueError("canary is not supported by this check: the canary is looked for by the imap and "
                             "graph_mail checks (give the canary's mailbox an integration with one of them)")
        return data


class RenamedBacklogOptions(BacklogOptions):
    """IMAP's and Graph's options: ``backlog_warn`` (a duration there) is still taken, as ``backlog_age``."""

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return renamed(data)


def renamed(data: Any) -> Any:
    """``backlog_warn`` (IMAP's and Graph's duration) taken as ``backlog_age`` with its old meaning, warn only (no
    ``backlog_grace`` unless one is given); both at once is an error naming the new key."""
    if not isinstance(data, Mapping) or not any(old in data for old in RENAMED):
        return data
    data = dict(data)
    for old, new in RENAMED.items():
        if old in data:
            if new in data:
                raise ValueError(f"{old} is the old name of {new}: keep only {new}")
            data[new] = data.pop(old)
            data.setdefault("backlog_grace", None)
    return data


def age_words(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"


def judge(age_s: float | None, options: BacklogOptions, system: str | None) -> tuple[Status, str | None, str]:
    """(status, diagnosis code, words to add to the summary) of the oldest uncollected message's age. Unknown age or
    no ``backlog_age``: ok and nothing said here (the caller says what it read)."""
    limit = options.backlog_age
    if limit is None or age_s is None or age_s <= limit:
        return Status.OK, None, ""
    who = system or "the consuming system"
    if options.backlog_grace is None:  # the old name, backlog_warn: a warning only
        return Status.WARN, "inbox_backlog", f" (over backlog_warn {age_words(limit)}: is {who} still collecting mail?)"
    grace_end = limit + options.backlog_grace
    if age_s > grace_end:
        return (Status.FAIL, "consumer_not_collecting",
                f" (over backlog_age {age_words(limit)} plus backlog_grace {age_words(options.backlog_grace)}: "
                f"{who} has not collected this mailbox's mail for {age_words(age_s)})")
    return (Status.WARN, "inbox_backlog",
            f" (over backlog_age {age_words(limit)}: is {who} still collecting mail? Past {age_words(grace_end)} "
            "it is a failure)")


def header_date(raw: bytes | list[bytes]) -> tuple[datetime | None, str | None]:
    """When a message arrived, from its headers (POP ``TOP n 0``): the topmost Received header's date (the time the
    last server, the mailbox's own, took it), else the Date header (the sender's clock). (date, header used), or
    (None, None) when neither parses."""
    if isinstance(raw, list):
        raw = b"\r\n".join(raw)
    headers = BytesHeaderParser().parsebytes(raw)
    for name in ("Received", "Date"):
        value = headers.get(name)
        if not value:
            continue
        text = str(value).rsplit(";", 1)[-1] if name == "Received" else str(value)
        try:
            when = parsedate_to_datetime(" ".join(text.split()))
        except (TypeError, ValueError, IndexError):
            continue
        if when is None:
            continue
        return (when if when.tzinfo else when.replace(tzinfo=UTC)), name
    return None, None


# -- the canary found and collected --------------------------------------------------------------------------------
# A sending check (smtp or graph_mail with canary_to) sends "[mailwarden canary] <integration> <tag>" and records the
# tag and the time the server accepted it. The reading check of the mailbox the canary goes to (imap, graph_mail with
# `canary`) finds it by its subject and judges the newest canary whose verdict is due:
# - delivered: found (now, or by an earlier run of this check) within deliver_within of being sent; the delay (the
#   server's received time minus the sent time) is stored as canary_delay_s; not found by then: `fail`
#   canary_not_delivered;
# - collected (collect_within set, for a consuming system's own mailbox): read, moved out of the inbox, or gone after
#   this check saw it, within collect_within of arriving; still unread in the inbox after it: `fail`
#   consumer_not_collecting. Gone and never seen by this check (collected between two runs): delivery not observed,
#   said so, no verdict.
SUBJECT = "[mailwarden canary] {integration} {tag}"
PREFIX = "[mailwarden canary] {integration} "
RECENT = 20  # the newest canaries judged (the newest one due decides; older ones only while newer are pending)
LOOKBACK_S = 86400.0  # canaries older than their deadlines by more than this are not read again


class CanaryOptions(BaseModel):
    """A reading check's ``canary``: the canaries another integration sends to this mailbox."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    # the integration whose smtp or graph_mail check sends its canary here (its canary_to is this mailbox)
    from_: str = Field(alias="from", min_length=1)
    deliver_within: Duration = Field(600.0, le=_MAX_S)  # not found this long after sending: fail canary_not_delivered
    # a consuming system's own mailbox: still unread in the inbox this long after arriving: fail consumer_not_collecting
    collect_within: Duration | None = Field(None, le=_MAX_S)

    def since(self, now: datetime) -> datetime:
        """How far back the canaries are read."""
        return now - timedelta(seconds=self.deliver_within + (self.collect_within or 0.0) + LOOKBACK_S)


@dataclass(frozen=True)
class Found:
    """A canary in the mailbox: its tag, the server's received time, and where it is: ``unread`` (in the inbox,
    unread), ``read`` (in the inbox, read), ``deleted`` (IMAP's \\Deleted flag, not expunged yet), ``moved`` (in
    another folder: Graph searches them all)."""

    tag: str
    received: datetime
    state: str


def tag_of(subject: str, integration: str) -> str | None:
    prefix = PREFIX.format(integration=integration)
    if not subject.startswith(prefix):
        return None
    rest = subject[len(prefix):].strip()
    return rest if rest and " " not in rest else None


def _at(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _delay(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else age_words(seconds)


@dataclass
class CanaryVerdict:
    status: Status
    code: str | None
    words: str  # added to the check's summary
    metrics: dict[str, Any]


def judge_canaries(sent: list[CanarySent], found: Mapping[str, Found], seen_before: Mapping[str, datetime],
                   options: CanaryOptions, now: datetime, *, where: str, system: str | None) -> CanaryVerdict:
    """The verdict on the newest canary that is due (see above). ``found``: the canaries in the mailbox now;
    ``seen_before``: the ones earlier runs of this check found (tag -> received); ``where``: what was searched."""
    sender, who = options.from_, system or "the consuming system"
    seen_now = {tag: f.received.astimezone(UTC).isoformat() for tag, f in found.items()}
    metrics: dict[str, Any] = {"canaries_seen": seen_now}
    if not sent:
        return CanaryVerdict(Status.OK, None, f"; no canary from {sender} since {_at(options.since(now))} to look for "
                             f"(its smtp or graph_mail check sends one when its canary_to is this mailbox)", metrics)
    pending = 0
    for c in reversed(sent):  # newest first: the newest canary whose verdict is due decides
        f = found.get(c.tag)
        received = f.received if f else seen_before.get(c.tag)
        due = c.sent_at + timedelta(seconds=options.deliver_within)
        base = {"canary_tag": c.tag, "canary_sent_at": c.sent_at.isoformat()}
        if received is None:
            if now < due:
                pending += 1
                continue
            if options.collect_within is not None:
                metrics.update(base, canary_state="unobserved")
                return CanaryVerdict(Status.OK, None, (
                    f"; canary {c.tag} from {sender} (sent {_at(c.sent_at)}) is not in {where} and this check never "
                    f"saw it: delivery not observed ({who} may have collected it between two runs of this check)"),
                    metrics)
            metrics.update(base, canary_state="not_delivered")
            to = f" to {c.to}" if c.to else ""  # an address that is not this mailbox's shows a misconfiguration
            return CanaryVerdict(Status.FAIL, "canary_not_delivered", (
                f"; canary {c.tag} from {sender}, sent{to} {_at(c.sent_at)}, is not in {where} after "
                f"{_delay(options.deliver_within)} (deliver_within)"), metrics)
        delay = max(0.0, (received - c.sent_at).total_seconds())
        waited = max(0.0, (now - received).total_seconds())
        if options.collect_within is not None and f is not None and f.state == "unread" and \
                waited <= options.collect_within and delay <= options.deliver_within:
            pending += 1  # delivered, and its consumer still has time to collect it
            continue
        metrics.update(base, canary_delay_s=round(delay, 1))
        if delay > options.deliver_within:
            metrics["canary_state"] = "late"
            return CanaryVerdict(Status.FAIL, "canary_not_delivered", (
                f"; canary {c.tag} from {sender}, sent {_at(c.sent_at)}, arrived only after {_delay(delay)}, over "
                f"deliver_within {_delay(options.deliver_within)}"), metrics)
        words = f"; canary {c.tag} from {sender} delivered after {_delay(delay)}"
        if options.collect_within is None:
            metrics["canary_state"] = "delivered"
            return CanaryVerdict(Status.OK, None, words, metrics)
        if f is not None and f.state == "unread":
            metrics["canary_state"] = "not_collected"
            return CanaryVerdict(Status.FAIL, "consumer_not_collecting", (
                f"{words}, and is still unread in the inbox {_delay(waited)} later (over collect_within "
                f"{_delay(options.collect_within)}): {who} is not collecting mail"), metrics)
        how = {"read": "read in the inbox", "moved": "moved out of the inbox",
               "deleted": "flagged deleted"}.get(f.state if f else "", f"gone from {where}")
        metrics["canary_state"] = "collected"
        return CanaryVerdict(Status.OK, None, f"{words} and collected ({how}) within {_delay(waited)}", metrics)
    metrics["canary_pending"] = pending
    return CanaryVerdict(Status.OK, None, f"; {pending} canary(ies) from {sender} not due yet", metrics)


def worse(first: tuple[Status, str | None], second: tuple[Status, str | None]) -> tuple[Status, str | None]:
    """The more severe of two (status, code) verdicts of one run (the backlog's, the canary's); the first on a tie."""
    return second if SEVERITY_ORDER[second[0]] < SEVERITY_ORDER[first[0]] else first


def no_log(options: CanaryOptions) -> CanaryVerdict:
    """Where no results are stored (no canary log), nothing is known of the canaries sent: said, no verdict."""
    return CanaryVerdict(Status.OK, None, f"; canaries from {options.from_} not looked for: no stored results here "
                         "say which were sent", {})
