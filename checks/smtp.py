"""`smtp`: EHLO, STARTTLS, EHLO, `AUTH XOAUTH2` in two steps, NOOP, QUIT; optionally a canary message.

Two steps (``AUTH XOAUTH2``, 334, then the response), never the initial-response form: real tokens
exceed some servers' line limit. A login does not prove the right to send as the integration's
address: Exchange refuses SendAs only after DATA. The canary (off by default) sends one small tagged
message to a configured address and so proves it; without it the result says send permission was not
verified.
"""

from __future__ import annotations

import functools
import smtplib
import time
import uuid
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from mailwarden.checks import mailflow
from mailwarden.checks.base import CheckContext, Flow, Outcome, Permission, Status, mailbox_target
from mailwarden.checks.mailbox import (
    SASL_PLACEHOLDER,
    Probe,
    ProtocolCheck,
    connect_failure,
    no_delay,
    tls_context,
    xoauth2,
)
from mailwarden.checks.permissions import EXCHANGE


class SmtpOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    canary_to: str | None = None  # send a tagged test message here on every run (off when unset)
    canary_from: str | None = None  # the sender the consuming system uses (default: the mailbox)


class _Until:
    """A reply reader that gives up at the check's deadline: endless continuation lines ("220-...") never
    make smtplib's getreply return, and each line arrives well inside the socket timeout."""

    def __init__(self, raw: Any, deadline: float):
        self.raw, self.deadline = raw, deadline

    def readline(self, limit: int = -1) -> bytes:
        if time.monotonic() > self.deadline:
            raise TimeoutError("the SMTP reply did not end before the check's timeout")
        return self.raw.readline(limit)

    def close(self) -> None:
        self.raw.close()


@functools.cache
def ehlo_name() -> str:
    """The name EHLO gives, as smtplib chooses it (an SMTP object not connected chooses and sends nothing), once per
    process: smtplib looks it up (a reverse DNS lookup) for every connection not given one."""
    return smtplib.SMTP().local_hostname


class _Bounded(smtplib.SMTP):
    _host: str  # smtplib's (the name STARTTLS verifies), which typeshed leaves out

    def __init__(self, deadline: float, **kwargs: Any):
        self.deadline = deadline
        super().__init__(**kwargs)

    def _get_socket(self, host, port, timeout):  # noqa: ANN001, ANN202 - smtplib's signature
        return no_delay(super()._get_socket(host, port, timeout))

    def getreply(self):  # noqa: ANN201 - smtplib's signature
        if self.file is None and self.sock is not None:
            self.file = _Until(self.sock.makefile("rb"), self.deadline)
        return super().getreply()


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {' '.join(text.split())}"


def classify_auth(code: int, reply: str) -> tuple[Status, str]:
    """The reply to AUTH (or the greeting): 535 5.7.139 tells the tenant's switch from the mailbox's; 535 5.7.3 is a
    refused login; 421 4.3.2 is the service (MailKit#1106); 550 5.7.30 and "basic authentication is disabled" are
    Basic auth's retirement, never an XOAUTH2 answer."""
    low = reply.lower()
    if "5.7.139" in low and "for the mailbox" in low:
        return Status.FAIL, "smtp_auth_disabled_mailbox"
    if "5.7.139" in low and "basic authentication" in low or "5.7.30" in low:
        return Status.FAIL, "smtp_basic_auth_retired"
    if "5.7.139" in low:
        return Status.FAIL, "smtp_auth_disabled"
    if code == 535:
        return Status.FAIL, "auth_failed"
    if code == 421:
        return Status.ERROR, "service_unavailable"
    if code == 432 or "request is throttled" in low:
        return Status.WARN, "throttled"
    if 400 <= code < 500:
        return Status.ERROR, "unexpected_reply"  # temporary (Dovecot 454 4.7.0)
    return Status.FAIL, "unexpected_reply"


SUBMIT_WAIT_S = 60.0  # Exchange gives no back-off with 432: a minute before the next submission


def classify_submit(code: int, reply: str) -> tuple[Status, str]:
    """The reply to a submitted message (end of DATA; also MAIL FROM / RCPT). Captured: 554 5.2.252 SendAsDenied
    (gophish#2900) and its older 554 5.2.0 ...SendAsDeniedException form (rss2email#147); 432 4.3.2 concurrent
    connections / sender thread limit (fastapi-mail#75, timeoff-management#308); Microsoft's texts for 554 5.2.0
    SubmissionQuotaExceededException, 550 5.7.705 / 5.7.708 and 550 5.2.252 (sender throttled after SendAs
    denials)."""
    low = reply.lower()
    if "sendasdenied" in low or "5.2.252" in low or "5.7.60" in low:
        return Status.FAIL, "send_as_denied"
    if "submissionquotaexceeded" in low:
        return Status.FAIL, "sending_quota_exceeded"
    if "5.7.705" in low or "5.7.708" in low:
        return Status.FAIL, "outbound_blocked"
    if code == 421:
        return Status.ERROR, "service_unavailable"
    if code == 432 or "sender thread limit" in low or "concurrent connections limit" in low:
        return Status.WARN, "throttled"
    if 400 <= code < 500:
        return Status.ERROR, "unexpected_reply"
    return Status.FAIL, "unexpected_reply"


def login_identity(flow: str, mailbox: str, account: str | None) -> str:
    """Who SMTP AUTH names in user=: with a delegated token, always the token's own user (Exchange refuses
    user=<shared mailbox> with 535 5.7.3; M365_FACTS.md "SASL XOAUTH2"); app-only, the mailbox."""
    return account if flow == "delegated" and account else mailbox


class SmtpCheck(ProtocolCheck):
    kind: ClassVar[str] = "smtp"
    config_model: ClassVar[type[BaseModel]] = SmtpOptions
    needs: ClassVar[Mapping[Flow, tuple[Permission, ...]]] = {
        "app": ((EXCHANGE, ("SMTP.SendAsApp",)),), "delegated": ((EXCHANGE, ("SMTP.Send",)),)}
    endpoint: ClassVar[str | None] = "smtp"

    def _converse(self, ctx: CheckContext, token: str) -> Outcome:
        endpoint = ctx.endpoints.smtp
        host = str(endpoint)
        probe = Probe()
        conn = _Bounded(time.monotonic() + ctx.timeout_s, timeout=ctx.timeout_s, local_hostname=ehlo_name())
        conn._host = endpoint.host  # STARTTLS verifies the certificate against this name
        probe.watch(conn)
        try:
            code, banner = probe.time("connect", lambda: conn.connect(endpoint.host, endpoint.port))
            if code != 220:  # 421 4.3.2 at the greeting: the service, not the mailbox
                return self._refused(ctx, probe, code, banner)
            probe.say(f"S: {_reply(code, banner)}")
            conn.ehlo()
            if not conn.has_extn("starttls"):
                return probe.outcome(Status.FAIL, "unexpected_reply", f"{host} does not offer STARTTLS",
                                     reply=_reply(250, conn.ehlo_resp or b""))
            probe.time("tls", lambda: conn.starttls(context=tls_context(ctx.endpoints.ca_bundle)))
            probe.say("C: STARTTLS")
            conn.ehlo()
            return self._session(ctx, conn, token, probe)
        except smtplib.SMTPConnectError as exc:
            return self._refused(ctx, probe, exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPServerDisconnected as exc:
            if isinstance(exc.__context__, TimeoutError):  # smtplib reports its read timeout as "unexpectedly closed"
                return connect_failure(exc.__context__, host, probe)
            return connect_failure(ConnectionError(f"server closed the connection: {exc}"), host, probe)
        except Exception as exc:  # noqa: BLE001 - classified: DNS, refused, TLS, timeout
            return connect_failure(exc, host, probe)
        finally:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                conn.close()

    def _session(self, ctx: CheckContext, conn: smtplib.SMTP, token: str, probe: Probe) -> Outcome:
        options: SmtpOptions = ctx.options  # type: ignore[assignment]
        integ = ctx.integration
        mailbox = integ.mailbox
        login = login_identity(integ.flow, mailbox, integ.account)
        first = [True]

        def respond(challenge: bytes | None = None) -> str:
            if first[0]:
                first[0] = False
                return xoauth2(login, token).decode()
            text = challenge.decode("utf-8", "replace") if isinstance(challenge, bytes) else str(challenge or "")
            probe.say(f"S: 334 (challenge) {text}")
            return ""  # an error challenge is answered with an empty response (RFC 7628)

        probe.say("C: AUTH XOAUTH2")
        probe.say(f"C: {SASL_PLACEHOLDER}")
        try:
            code, message = probe.time("auth", lambda: conn.auth("XOAUTH2", respond, initial_response_ok=False))
        except smtplib.SMTPAuthenticationError as exc:
            return self._refused(ctx, probe, exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPNotSupportedError:
            return probe.outcome(Status.FAIL, "unexpected_reply", "the server does not offer AUTH XOAUTH2")
        except smtplib.SMTPResponseException as exc:
            return self._refused(ctx, probe, exc.smtp_code, exc.smtp_error)
        probe.say(f"S: {_reply(code, message)}")
        code, message = probe.time("noop", conn.noop)
        probe.say(f"C: NOOP\nS: {_reply(code, message)}")
        if not options.canary_to:
            sender = options.canary_from or mailbox
            unproven = (f"send permission not verified: Send As {sender} is proven only by the canary (Exchange "
                        "applies it when a message is submitted), which is off" if sender.lower() != login.lower()
                        else "send permission not verified (canary off)")
            return probe.outcome(Status.OK, None, f"SMTP AUTH as {login} accepted; {unproven}", send_verified=False,
                                 login_as=login)
        return self._canary(ctx, conn, options, probe, login)

    def _refused(self, ctx: CheckContext, probe: Probe, code: int, message: bytes | str) -> Outcome:
        reply = _reply(code, message)
        probe.say(f"S: {reply}")
        integ = ctx.integration
        login = login_identity(integ.flow, integ.mailbox, integ.account)
        status, diag = classify_auth(code, reply)
        if status != Status.FAIL:  # the service, not the login: no causes about permissions
            return probe.outcome(status, diag, f"SMTP {integ.mailbox}: {ctx.endpoints.smtp} answered '{reply}'",
                                 reply=reply, login_as=login)
        return self.login_refused(ctx, probe, status, diag, reply, login_as=login)

    def _canary(self, ctx: CheckContext, conn: smtplib.SMTP, options: SmtpOptions, probe: Probe,
                login: str) -> Outcome:
        sender = options.canary_from or ctx.integration.mailbox
        tag = uuid.uuid4().hex[:12]
        msg = EmailMessage()
        msg["From"], msg["To"] = sender, options.canary_to
        msg["Subject"] = mailflow.SUBJECT.format(integration=ctx.integration.name, tag=tag)
        msg["X-Mailwarden-Canary"] = tag
        msg.set_content(f"mailwarden checked that {ctx.integration.name} can send as {sender}. Safe to delete.")
        try:
            probe.time("send", lambda: conn.send_message(msg))
        except smtplib.SMTPDataError as exc:
            return self._submit_refused(ctx, probe, exc.smtp_code, exc.smtp_error, f"the canary from {sender} "
                                        f"(signed in as {login}) was refused after DATA", login)
        except smtplib.SMTPRecipientsRefused as exc:
            (code, message), *_ = exc.recipients.values()
            return self._submit_refused(ctx, probe, code, message, "canary recipient refused", login)
        except smtplib.SMTPSenderRefused as exc:
            return self._submit_refused(ctx, probe, exc.smtp_code, exc.smtp_error, f"canary sender {sender} refused",
                                        login)
        sent_at = ctx.now()
        probe.say(f"C: canary {tag} from {sender} to {options.canary_to}: accepted")
        return probe.outcome(Status.OK, None, f"SMTP AUTH as {login} accepted and canary {tag} sent as {sender}",
                             send_verified=True, canary_tag=tag, canary_sent_at=sent_at.isoformat(),
                             canary_to=options.canary_to, login_as=login)

    def _submit_refused(self, ctx: CheckContext, probe: Probe, code: int, message: bytes | str, what: str,
                        login: str) -> Outcome:
        reply = _reply(code, message)
        probe.say(f"S: {reply}")
        status, diag = classify_submit(code, reply)
        outcome = probe.outcome(status, diag, f"{what}: {reply}", reply=reply, login_as=login)
        if diag == "throttled":
            outcome.retry_after_s, outcome.backoff_target = SUBMIT_WAIT_S, mailbox_target("smtp", login)
        return outcome
