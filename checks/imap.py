"""`imap`: log in with XOAUTH2 the way the consuming system does, open the inbox read-only, read its size
and the age of the oldest unseen message, log out.

EXAMINE, not SELECT: nothing is marked seen. A login is not enough: Exchange may accept AUTHENTICATE and
then answer the folder command with ``BAD User is authenticated but not connected.`` The backlog (oldest
unseen message older than ``backlog_warn``) is the end-to-end sign that the consuming system stopped
reading mail, whatever its own token does.
"""

from __future__ import annotations

import imaplib
import re
import time
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from mailwarden.checks.base import CheckContext, Outcome, Status, mailbox_target
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
from mailwarden.durations import Duration


class ImapOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    folder: str = "INBOX"
    starttls: bool = False  # port 143 + STARTTLS instead of implicit TLS
    backlog_warn: Duration | None = None  # oldest unseen message older than this -> warn inbox_backlog


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


class ImapCheck(ProtocolCheck):
    kind: ClassVar[str] = "imap"
    config_model: ClassVar[type[BaseModel]] = ImapOptions

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
            class _Plain(imaplib.IMAP4):
                def _create_socket(self, timeout):
                    probe.watch(self)
                    return no_delay(imaplib.IMAP4._create_socket(self, timeout))

            conn = probe.time("connect", lambda: _Plain(host, port, timeout=timeout))
            probe.time("tls", lambda: conn.starttls(ssl_context=tls))
        else:
            class _Timed(imaplib.IMAP4_SSL):
                def _create_socket(self, timeout):  # split TCP connect from the TLS handshake
                    probe.watch(self)
                    sock = probe.time("connect", lambda: no_delay(imaplib.IMAP4._create_socket(self, timeout)))
                    return probe.time("tls", lambda: self.ssl_context.wrap_socket(sock, server_hostname=self.host))

            conn = _Timed(host, port, ssl_context=tls, timeout=timeout)
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
            status, code = classify_login(reply)
            return self.login_refused(ctx, probe, status, code, reply,
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
        try:
            conn.logout()
        except (imaplib.IMAP4.error, OSError):
            pass
        metrics: dict[str, Any] = {"message_count": count, "oldest_unseen_age_s": oldest_age}
        summary = f"EXAMINE {folder} of {mailbox}: {count} message(s)"
        if oldest_age is not None:
            summary += f", oldest unseen {_age(oldest_age)} old"
        if options.backlog_warn and oldest_age is not None and oldest_age > options.backlog_warn:
            system = ctx.integration.system or "the consuming system"
            return probe.outcome(Status.WARN, "inbox_backlog", summary + f" (over {_age(options.backlog_warn)}: "
                                 f"is {system} still reading mail?)", **metrics)
        return probe.outcome(Status.OK, None, summary, **metrics)

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


def _age(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"
