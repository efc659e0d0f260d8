"""`imap`: log in with XOAUTH2 the way the consuming system does, open the inbox read-only, read its size
and the age of the oldest unseen message, log out.

EXAMINE, not SELECT: nothing is marked seen. A login is not enough: Exchange may accept AUTHENTICATE and
then answer the folder command with ``BAD User is authenticated but not connected.`` The backlog (oldest
unseen message older than ``backlog_age``, then ``backlog_grace``: ``checks.mailflow``) is the end-to-end sign
that the consuming system stopped reading mail, whatever its own token does.
"""

from __future__ import annotations

import imaplib
import re
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from email.parser import BytesHeaderParser
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from mailwarden.checks import mailflow
from mailwarden.checks.base import CheckContext, Flow, Outcome, Permission, Status, mailbox_target
from mailwarden.checks.mailbox import (
    SASL_PLACEHOLDER,
    Probe,
    ProtocolCheck,
    connect_failure,
    decode_challenge,
    no_delay,
    tls_context,
    xoauth2,
)
from mailwarden.checks.permissions import EXCHANGE


class ImapOptions(mailflow.RenamedBacklogOptions):
    model_config = ConfigDict(extra="forbid")
    folder: str = "INBOX"
    starttls: bool = False  # port 143 + STARTTLS instead of implicit TLS
    # backlog_age / backlog_grace (checks.mailflow): the oldest unseen message of the folder; backlog_warn: old name
    # the canaries another integration sends here: found by subject in the folder (checks.mailflow)
    canary: mailflow.CanaryOptions | None = None


def _text(data: Any) -> str:
    if isinstance(data, list | tuple):
        return " ".join(_text(d) for d in data if d is not None)
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


def error_text(exc: BaseException) -> str:
    """imaplib's "EXAMINE command error: BAD [b'User is ...']" -> "BAD User is ..."."""
    text = str(exc).split(" command error: ", 1)[-1]
    return re.sub(r"\[b(['\"])(.*?)\1\]", r"\2", text).strip()


_BACKOFF = re.compile(r"suggested backoff time:\s*(\d+)", re.I)
THROTTLE_DEFAULT_S = 60.0  # "Request is throttled" without a back-off time


def classify_reply(reply: str) -> tuple[Status, str, float | None] | None:
    """Exchange's replies that mean the same at any step: throttled (NO or BAD "Request is throttled. Suggested
    Backoff Time: N milliseconds", imapsync#198, email-oauth2-proxy#191), "authenticated but not connected"
    (email-oauth2-proxy#74), the back end unavailable ("Server Unavailable. 15", owncloud-archive/mail#721).
    (status, code, wait in seconds) or None for any other reply."""
    low = reply.lower()
    if "request is throttled" in low:
        m = _BACKOFF.search(reply)
        return Status.WARN, "throttled", int(m.group(1)) / 1000 if m else THROTTLE_DEFAULT_S
    if "authenticated but not connected" in low:
        return Status.FAIL, "authenticated_not_connected", None
    if "server unavailable" in low:
        return Status.ERROR, "service_unavailable", None
    return None


def classify_login(error: str) -> tuple[Status, str]:
    known = classify_reply(error)
    if known is not None:
        return known[0], known[1]
    low = error.lower()
    if "[unavailable]" in low:  # Dovecot: a temporary failure, not a refusal
        return Status.ERROR, "unexpected_reply"
    if "authenticate failed" in low or "authenticationfailed" in low or "authentication failed" in low:
        return Status.FAIL, "auth_failed"
    return Status.FAIL, "unexpected_reply"


class _PlainIMAP(imaplib.IMAP4):
    """IMAP before STARTTLS, hung up when the check's time is up."""

    def __init__(self, host: str, port: int, probe: Probe, **kw: Any):
        self.probe = probe  # before the connection opens: IMAP4.__init__ opens it
        super().__init__(host, port, **kw)

    def _create_socket(self, timeout):
        self.probe.watch(self)
        return no_delay(imaplib.IMAP4._create_socket(self, timeout))


class _TimedIMAP(imaplib.IMAP4_SSL):
    """IMAP over TLS, the TCP connect timed apart from the TLS handshake, hung up when the check's time is up."""

    def __init__(self, host: str, port: int, probe: Probe, **kw: Any):
        self.probe = probe
        super().__init__(host, port, **kw)

    def _create_socket(self, timeout):
        self.probe.watch(self)
        sock = self.probe.time("connect", lambda: no_delay(imaplib.IMAP4._create_socket(self, timeout)))
        return self.probe.time("tls", lambda: self.ssl_context.wrap_socket(sock, server_hostname=self.host))


class ImapCheck(ProtocolCheck):
    kind: ClassVar[str] = "imap"
    config_model: ClassVar[type[BaseModel]] = ImapOptions
    needs: ClassVar[Mapping[Flow, tuple[Permission, ...]]] = {
        "app": ((EXCHANGE, ("IMAP.AccessAsApp",)),), "delegated": ((EXCHANGE, ("IMAP.AccessAsUser.All",)),)}
    endpoint: ClassVar[str | None] = "imap"

    def _converse(self, ctx: CheckContext, token: str) -> Outcome:
        probe = Probe()
        first = self._attempt(ctx, token, probe)
        if first.code != "authenticated_not_connected":
            return first
        # Exchange also says "not connected" under connection pressure (about 20 connections per mailbox): only a
        # second connection that is refused the same way makes it a permission diagnosis (M365_FACTS.md)
        probe.say("(a second connection confirms or clears 'not connected')")
        second = self._attempt(ctx, token, probe)
        if second.code == "authenticated_not_connected":
            second.metrics["confirmed_on_second_connection"] = True
            return second
        second.metrics["first_connection"] = "authenticated but not connected"
        if second.status == Status.OK:
            second.summary += ("; the first connection was 'authenticated but not connected' (too many connections "
                               "to the mailbox at that moment), the second one worked")
        return second

    def _attempt(self, ctx: CheckContext, token: str, probe: Probe) -> Outcome:
        options: ImapOptions = ctx.options  # type: ignore[assignment]
        endpoint = ctx.endpoints.imap
        host = str(endpoint)
        tls = tls_context(ctx.endpoints.ca_bundle)
        try:
            conn = self._connect(endpoint.host, endpoint.port, options.starttls, tls, ctx.timeout_s, probe)
        except Exception as exc:  # noqa: BLE001 - classified: DNS, refused, TLS, timeout
            return connect_failure(exc, host, probe)
        try:
            return self._session(ctx, conn, token, options, probe)
        except (OSError, imaplib.IMAP4.abort) as exc:
            return connect_failure(exc, host, probe)
        finally:
            try:
                conn.shutdown()
            except OSError:
                pass

    @staticmethod
    def _connect(host: str, port: int, starttls: bool, tls, timeout: float, probe: Probe) -> imaplib.IMAP4:
        if starttls:
            conn: imaplib.IMAP4 = probe.time("connect", lambda: _PlainIMAP(host, port, probe, timeout=timeout))
            probe.time("tls", lambda: conn.starttls(ssl_context=tls))
        else:
            conn = _TimedIMAP(host, port, probe, ssl_context=tls, timeout=timeout)
        probe.say(f"S: {_text(conn.welcome)}")
        return conn

    def _session(self, ctx: CheckContext, conn: imaplib.IMAP4, token: str, options: ImapOptions,
                 probe: Probe) -> Outcome:
        mailbox = ctx.integration.mailbox
        challenges: list[str] = []

        def respond(challenge: bytes) -> bytes:
            if not challenges:
                challenges.append("")
                return xoauth2(mailbox, token)
            # a second continuation is an error challenge (RFC 7628): answer it with an empty response
            challenges.append(decode_challenge(challenge) if challenge else "")
            return b""

        probe.say("C: AUTHENTICATE XOAUTH2")
        probe.say(f"C: {SASL_PLACEHOLDER}")
        try:
            probe.time("auth", lambda: conn.authenticate("XOAUTH2", respond))
        except imaplib.IMAP4.error as exc:
            reply = error_text(exc)
            probe.say(f"S: {reply}")
            extra = [c for c in challenges[1:] if c]
            if extra:
                probe.say(f"S: + {extra[0]}")
            known = classify_reply(reply)
            if known is not None and known[1] != "authenticated_not_connected":
                return self._transient(ctx, probe, known, f"AUTHENTICATE answered '{reply}'", reply)
            status, refusal = classify_login(reply)
            return self.login_refused(ctx, probe, status, refusal, reply,
                                      challenge=extra[0] if extra else None)
        probe.say("S: OK AUTHENTICATE completed")
        folder = options.folder
        try:
            typ, data = probe.time("select", lambda: conn.select(f'"{folder}"', readonly=True))
        except imaplib.IMAP4.error as exc:
            typ, data = "BAD", [error_text(exc).removeprefix("BAD ").encode()]
        probe.say(f"C: EXAMINE {folder}")
        probe.say(f"S: {typ} {_text(data)}")
        if typ != "OK":
            reply = _text(data)
            known = classify_reply(reply)
            if known is not None and known[1] == "authenticated_not_connected":
                return probe.outcome(Status.FAIL, "authenticated_not_connected",
                                     f"IMAP login worked but EXAMINE {folder} answered '{typ} {reply}': the token is "
                                     f"good, access to {mailbox} is not", reply=reply)
            if known is not None:
                return self._transient(ctx, probe, known, f"EXAMINE {folder} answered '{typ} {reply}'", reply)
            return probe.outcome(Status.FAIL, "unexpected_reply", f"EXAMINE {folder} answered {typ} {reply}",
                                 reply=reply)
        count = int(_text(data[0]) or 0) if data and data[0] else 0
        try:
            oldest_age = probe.time("backlog", lambda: self._oldest_unseen_age(conn))
        except _Refused as refused:
            return self._transient(ctx, probe, refused.known, f"reading the backlog: '{refused.reply}'", refused.reply)
        canary = None
        wanted = options.canary
        if wanted is not None:
            try:
                canary = probe.time("canary", lambda: self._canary(ctx, conn, wanted, folder))
            except _Refused as refused:
                return self._transient(ctx, probe, refused.known, f"looking for the canaries: '{refused.reply}'",
                                       refused.reply)
        try:
            conn.logout()
        except (imaplib.IMAP4.error, OSError):
            pass
        metrics: dict[str, Any] = {"message_count": count, "oldest_unseen_age_s": oldest_age}
        summary = f"EXAMINE {folder} of {mailbox}: {count} message(s)"
        if oldest_age is not None:
            summary += f", oldest unseen {mailflow.age_words(oldest_age)} old"
        status, code, words = mailflow.judge(oldest_age, options, ctx.integration.system)
        summary += words
        if canary is not None:
            status, code = mailflow.worse((status, code), (canary.status, canary.code))
            summary += canary.words
            metrics.update(canary.metrics)
        return probe.outcome(status, code, summary, **metrics)

    def _canary(self, ctx: CheckContext, conn: imaplib.IMAP4, watch: mailflow.CanaryOptions,
                folder: str) -> mailflow.CanaryVerdict:
        if ctx.canaries is None:
            return mailflow.no_log(watch)
        now = ctx.now()
        since = watch.since(now)
        sent = ctx.canaries.sent(watch.from_, since)[-mailflow.RECENT:]
        seen_before = ctx.canaries.seen(ctx.integration.name, self.kind, since)
        try:
            found = _find_canaries(conn, watch.from_) if sent else {}
        except _Unanswered as exc:  # no search, no verdict: an unanswered search is not an absent canary
            return mailflow.CanaryVerdict(Status.OK, None, f"; canaries from {watch.from_} not looked for: "
                                          f"{exc.step} answered '{exc.reply}'", {})
        return mailflow.judge_canaries(sent, found, seen_before, watch, now,
                                       where=f"{folder} of {ctx.integration.mailbox}", system=ctx.integration.system)

    def _transient(self, ctx: CheckContext, probe: Probe, known: tuple[Status, str, float | None], what: str,
                   reply: str) -> Outcome:
        status, code, wait = known
        mailbox = ctx.integration.mailbox
        summary = f"IMAP {what} for {mailbox}"
        if wait:
            summary += f"; mailwarden waits {wait:g} s before the next IMAP check of this mailbox"
        outcome = probe.outcome(status, code, summary, reply=reply)
        if wait:
            outcome.retry_after_s, outcome.backoff_target = wait, mailbox_target("imap", mailbox)
        return outcome

    @staticmethod
    def _oldest_unseen_age(conn: imaplib.IMAP4) -> float | None:
        try:
            typ, data = conn.search(None, "UNSEEN")
        except imaplib.IMAP4.error as exc:  # BAD: raised by imaplib
            typ, data = "BAD", [error_text(exc).removeprefix("BAD ").encode()]
        _raise_known(typ, data)
        ids = _text(data).split() if typ == "OK" else []
        if not ids:
            return None
        try:
            typ, data = conn.fetch(ids[0], "(INTERNALDATE)")
        except imaplib.IMAP4.error as exc:
            typ, data = "BAD", [error_text(exc).removeprefix("BAD ").encode()]
        _raise_known(typ, data)
        if typ != "OK" or not data or not data[0]:
            return None
        parsed = imaplib.Internaldate2tuple(data[0] if isinstance(data[0], bytes) else data[0][0])
        if parsed is None:
            return None
        return max(0.0, time.time() - time.mktime(parsed))  # Internaldate2tuple gives local time


_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)", re.I)
_INTERNALDATE = re.compile(rb'INTERNALDATE "\s*(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) '
                           rb'([-+])(\d\d)(\d\d)"')


class _Unanswered(Exception):
    def __init__(self, step: str, reply: str):
        super().__init__(reply)
        self.step, self.reply = step, reply


def _internaldate(match: re.Match[bytes]) -> datetime | None:
    """An INTERNALDATE ("03-Dec-2026 05:00:00 +0000") as an aware datetime (English month names, as imaplib reads
    them, whatever the process's locale)."""
    day, mon, year, hh, mm, ss, sign, zh, zm = match.groups()
    month = imaplib.Mon2num.get(mon.capitalize())  # type: ignore[attr-defined]  # imaplib's own, not in typeshed
    if month is None:
        return None
    offset = timedelta(hours=int(zh), minutes=int(zm)) * (-1 if sign == b"-" else 1)
    try:
        return datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=timezone(offset))
    except ValueError:
        return None
MAX_CANARIES = 100  # the newest canaries fetched: more than a day of them at one a run


def _find_canaries(conn: imaplib.IMAP4, sender: str) -> dict[str, mailflow.Found]:
    """The canaries of ``sender`` in the open folder (SEARCH SUBJECT, then FLAGS, INTERNALDATE and the Subject
    header of the newest ones, read with BODY.PEEK: nothing is marked seen)."""
    prefix = mailflow.PREFIX.format(integration=sender).replace("\\", "").replace('"', "")
    try:
        typ, data = conn.uid("SEARCH", "SUBJECT", f'"{prefix.strip()}"')
    except imaplib.IMAP4.error as exc:
        typ, data = "BAD", [error_text(exc).removeprefix("BAD ").encode()]
    _raise_known(typ, data)
    if typ != "OK":
        raise _Unanswered("UID SEARCH SUBJECT", f"{typ} {_text(data)}")
    uids = _text(data).split()
    if not uids:
        return {}
    try:
        typ, data = conn.uid("FETCH", ",".join(uids[-MAX_CANARIES:]),
                             "(FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    except imaplib.IMAP4.error as exc:
        typ, data = "BAD", [error_text(exc).removeprefix("BAD ").encode()]
    _raise_known(typ, data)
    if typ != "OK":
        raise _Unanswered("UID FETCH", f"{typ} {_text(data)}")
    found: dict[str, mailflow.Found] = {}
    for item in data:
        if not isinstance(item, tuple) or len(item) < 2:
            continue
        head, body = item[0], item[1]
        flags, date = _FLAGS.search(head), _INTERNALDATE.search(head)
        subject = str(BytesHeaderParser().parsebytes(body).get("Subject") or "")
        tag = mailflow.tag_of(" ".join(subject.split()), sender)
        received = _internaldate(date) if date else None
        if tag is None or received is None:
            continue
        marks = (flags.group(1).decode() if flags else "").lower().split()
        state = "deleted" if "\\deleted" in marks else "read" if "\\seen" in marks else "unread"
        found[tag] = mailflow.Found(tag, received, state)
    return found


class _Refused(Exception):
    def __init__(self, known: tuple[Status, str, float | None], reply: str):
        super().__init__(reply)
        self.known, self.reply = known, reply


def _raise_known(typ: str, data: Any) -> None:
    if typ != "OK":
        reply = _text(data)
        known = classify_reply(reply)
        if known is not None:
            raise _Refused(known, f"{typ} {reply}")

