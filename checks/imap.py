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

from checks.base import CheckContext, Outcome, Status
from checks.mailbox import (
    SASL_PLACEHOLDER,
    Probe,
    ProtocolCheck,
    connect_failure,
    decode_challenge,
    no_delay,
    tls_context,
    xoauth2,
)
from monitor.config import Duration


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


def classify_login(error: str) -> tuple[Status, str]:
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
        options: ImapOptions = ctx.options  # type: ignore[assignment]
        endpoint = ctx.endpoints.imap
        host = str(endpoint)
        probe = Probe()
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
            if "authenticated but not connected" in reply.lower():
                return probe.outcome(Status.FAIL, "authenticated_not_connected",
                                     f"IMAP login worked but EXAMINE {folder} answered '{typ} {reply}': the token is "
                                     f"good, access to {mailbox} is not", reply=reply)
            return probe.outcome(Status.FAIL, "unexpected_reply", f"EXAMINE {folder} answered {typ} {reply}",
                                 reply=reply)
        count = int(_text(data[0]) or 0) if data and data[0] else 0
        oldest_age = probe.time("backlog", lambda: self._oldest_unseen_age(conn))
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

    @staticmethod
    def _oldest_unseen_age(conn: imaplib.IMAP4) -> float | None:
        typ, data = conn.search(None, "UNSEEN")
        ids = _text(data).split() if typ == "OK" else []
        if not ids:
            return None
        typ, data = conn.fetch(ids[0], "(INTERNALDATE)")
        if typ != "OK" or not data or not data[0]:
            return None
        parsed = imaplib.Internaldate2tuple(data[0] if isinstance(data[0], bytes) else data[0][0])
        if parsed is None:
            return None
        return max(0.0, time.time() - time.mktime(parsed))  # Internaldate2tuple gives local time


def _age(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"
