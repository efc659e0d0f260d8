"""`smtp`: EHLO, STARTTLS, EHLO, `AUTH XOAUTH2` in two steps, NOOP, QUIT; optionally a canary message.

Two steps (``AUTH XOAUTH2``, 334, then the response), never the initial-response form: real tokens
exceed some servers' line limit. A login does not prove the right to send as the integration's
address: Exchange refuses SendAs only after DATA. The canary (off by default) sends one small tagged
message to a configured address and so proves it; without it the result says send permission was not
verified.
"""

from __future__ import annotations

import smtplib
import time
import uuid
from email.message import EmailMessage
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from checks.base import CheckContext, Outcome, Status
from checks.mailbox import (
    SASL_PLACEHOLDER,
    Probe,
    ProtocolCheck,
    connect_failure,
    no_delay,
    tls_context,
    xoauth2,
)


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


class _Bounded(smtplib.SMTP):
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
    low = reply.lower()
    if "5.7.139" in low and "for the mailbox" in low:
        return Status.FAIL, "smtp_auth_disabled_mailbox"
    if "5.7.139" in low:
        return Status.FAIL, "smtp_auth_disabled"
    if code == 535:
        return Status.FAIL, "auth_failed"
    if 400 <= code < 500:
        return Status.ERROR, "unexpected_reply"  # temporary (Dovecot 454 4.7.0)
    return Status.FAIL, "unexpected_reply"


class SmtpCheck(ProtocolCheck):
    kind: ClassVar[str] = "smtp"
    config_model: ClassVar[type[BaseModel]] = SmtpOptions

    def _converse(self, ctx: CheckContext, token: str) -> Outcome:
        endpoint = ctx.endpoints.smtp
        host = str(endpoint)
        probe = Probe()
        conn = _Bounded(time.monotonic() + ctx.timeout_s, timeout=ctx.timeout_s)
        conn._host = endpoint.host  # STARTTLS verifies the certificate against this name
        probe.watch(conn)
        try:
            code, banner = probe.time("connect", lambda: conn.connect(endpoint.host, endpoint.port))
            probe.say(f"S: {_reply(code, banner)}")
            conn.ehlo()
            if not conn.has_extn("starttls"):
                return probe.outcome(Status.FAIL, "unexpected_reply", f"{host} does not offer STARTTLS",
                                     reply=_reply(250, conn.ehlo_resp or b""))
            probe.time("tls", lambda: conn.starttls(context=tls_context(ctx.endpoints.ca_bundle)))
            probe.say("C: STARTTLS")
            conn.ehlo()
            return self._session(ctx, conn, token, probe)
        except smtplib.SMTPServerDisconnected as exc:
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
        mailbox = ctx.integration.mailbox
        first = [True]

        def respond(challenge: bytes | None = None) -> str:
            if first[0]:
                first[0] = False
                return xoauth2(mailbox, token).decode()
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
            return probe.outcome(Status.OK, None, f"SMTP AUTH as {mailbox} accepted; send permission not verified "
                                 "(canary off)", send_verified=False)
        return self._canary(ctx, conn, options, probe)

    def _refused(self, ctx: CheckContext, probe: Probe, code: int, message: bytes | str) -> Outcome:
        reply = _reply(code, message)
        probe.say(f"S: {reply}")
        status, diag = classify_auth(code, reply)
        return self.login_refused(ctx, probe, status, diag, reply)

    def _canary(self, ctx: CheckContext, conn: smtplib.SMTP, options: SmtpOptions, probe: Probe) -> Outcome:
        sender = options.canary_from or ctx.integration.mailbox
        tag = uuid.uuid4().hex[:12]
        msg = EmailMessage()
        msg["From"], msg["To"] = sender, options.canary_to
        msg["Subject"] = f"[mailwarden canary] {ctx.integration.name} {tag}"
        msg["X-Mailwarden-Canary"] = tag
        msg.set_content(f"mailwarden checked that {ctx.integration.name} can send as {sender}. Safe to delete.")
        try:
            probe.time("send", lambda: conn.send_message(msg))
        except smtplib.SMTPDataError as exc:
            reply = _reply(exc.smtp_code, exc.smtp_error)
            probe.say(f"S: {reply}")
            if "sendasdenied" in reply.lower() or "5.2.252" in reply:
                return probe.outcome(Status.FAIL, "send_as_denied",
                                     f"the canary from {sender} was refused after DATA: {reply}", reply=reply)
            return probe.outcome(Status.FAIL, "unexpected_reply", f"the canary was refused: {reply}", reply=reply)
        except smtplib.SMTPRecipientsRefused as exc:
            reply = "; ".join(_reply(c, m) for c, m in exc.recipients.values())
            return probe.outcome(Status.FAIL, "unexpected_reply", f"canary recipient refused: {reply}", reply=reply)
        except smtplib.SMTPSenderRefused as exc:
            reply = _reply(exc.smtp_code, exc.smtp_error)
            diag = "send_as_denied" if "5.2.252" in reply or "sendas" in reply.lower() else "unexpected_reply"
            return probe.outcome(Status.FAIL, diag, f"canary sender {sender} refused: {reply}", reply=reply)
        probe.say(f"C: canary {tag} from {sender} to {options.canary_to}: accepted")
        return probe.outcome(Status.OK, None, f"SMTP AUTH as {ctx.integration.mailbox} accepted and canary {tag} "
                             f"sent as {sender}", send_verified=True, canary_tag=tag)
