"""`pop`: implicit TLS, `AUTH XOAUTH2` in two steps, `STAT`, with ``backlog_age`` `TOP 1 0`, `QUIT`.

Never RETR, never DELE: a POP check must not take mail away from the consuming system. Two steps
because Exchange drops the connection on the one-line form (``-ERR Protocol error. Connection is
closed. 10``). poplib has no AUTH helper, so the exchange is written here. A message count over
``backlog_warn`` means the consuming system stopped collecting mail; so does message 1 (the oldest in the
maildrop: POP has no read flags, a consumer collects by deleting) older than ``backlog_age`` (``checks.mailflow``),
dated by the headers `TOP 1 0` returns (the message stays unread and in place).
"""

from __future__ import annotations

import poplib
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

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
    xoauth2_b64,
)
from mailwarden.checks.permissions import EXCHANGE


class PopOptions(mailflow.UnsearchedBacklogOptions):
    model_config = ConfigDict(extra="forbid")
    backlog_warn: int | None = Field(None, ge=1)  # more messages waiting than this -> warn inbox_backlog
    # backlog_age / backlog_grace (checks.mailflow): message 1's age, from the headers of TOP 1 0


def _text(data: bytes | str | BaseException) -> str:
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


# Exchange's POP3 refuses a command line past its limit with this reply and drops the connection; since 2025 a
# long token's XOAUTH2 line (over about 4 KB of base64) is refused so (M365_FACTS.md; getmail6#256)
LONG_LINE = 4000


def classify_login(reply: str, line_length: int = 0) -> tuple[Status, str]:
    """A refused POP3 login: ``line_length`` is the length of the XOAUTH2 line mailwarden sent."""
    low = reply.lower()
    if "request is throttled" in low:
        return Status.WARN, "throttled"
    if "protocol error" in low and "connection is closed" in low:
        return (Status.FAIL, "token_too_long") if line_length > LONG_LINE else (Status.FAIL, "unexpected_reply")
    if "authenticated but not connected" in low:  # Exchange's POP3 text for it (no public capture)
        return Status.FAIL, "authenticated_not_connected"
    if "server unavailable" in low:
        return Status.ERROR, "service_unavailable"
    if "[sys/temp]" in low:  # Dovecot: temporary failure
        return Status.ERROR, "unexpected_reply"
    if "authentication fail" in low or "[auth]" in low or "bad password" in low:
        return Status.FAIL, "auth_failed"
    return Status.FAIL, "unexpected_reply"


class _TimedPOP3(poplib.POP3_SSL):
    """POP3 over TLS, the TCP connect timed apart from the TLS handshake, hung up when the check's time is up."""

    def __init__(self, host: str, port: int, probe: Probe, **kw: Any):
        self.probe = probe  # before the connection opens: POP3.__init__ opens it
        super().__init__(host, port, **kw)

    def _create_socket(self, timeout):
        self.probe.watch(self)
        sock = self.probe.time("connect", lambda: no_delay(poplib.POP3._create_socket(self, timeout)))
        return self.probe.time("tls", lambda: self.context.wrap_socket(sock, server_hostname=self.host))


class PopCheck(ProtocolCheck):
    kind: ClassVar[str] = "pop"
    config_model: ClassVar[type[BaseModel]] = PopOptions
    needs: ClassVar[Mapping[Flow, tuple[Permission, ...]]] = {
        "app": ((EXCHANGE, ("POP.AccessAsApp",)),), "delegated": ((EXCHANGE, ("POP.AccessAsUser.All",)),)}
    endpoint: ClassVar[str | None] = "pop"

    def _converse(self, ctx: CheckContext, token: str) -> Outcome:
        endpoint = ctx.endpoints.pop
        host = str(endpoint)
        probe = Probe()
        tls = tls_context(ctx.endpoints.ca_bundle)

        try:
            conn = _TimedPOP3(endpoint.host, endpoint.port, probe, timeout=ctx.timeout_s, context=tls)
        except Exception as exc:  # noqa: BLE001 - classified: DNS, refused, TLS, timeout
            return connect_failure(exc, host, probe)
        probe.say(f"S: {_text(conn.welcome)}")
        try:
            return self._session(ctx, conn, token, probe)
        except (OSError, EOFError) as exc:
            return connect_failure(exc, host, probe)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _session(self, ctx: CheckContext, conn: poplib.POP3, token: str, probe: Probe) -> Outcome:
        options: PopOptions = ctx.options  # type: ignore[assignment]
        mailbox = ctx.integration.mailbox
        line = xoauth2_b64(mailbox, token)
        code: str | None  # classify_login's, then mailflow.judge's (None when all is well)
        refused = self._authenticate(conn, mailbox, line, probe)
        if refused is not None:
            status, code = classify_login(refused, len(line))
            if code == "token_too_long":
                return probe.outcome(status, code, f"POP3 refused the XOAUTH2 line of {len(line)} characters for "
                                     f"{mailbox} and closed the connection: '{refused}'", reply=refused,
                                     line_length=len(line))
            if status == Status.WARN:
                outcome = probe.outcome(status, code, f"POP3 login to {mailbox}: '{refused}'", reply=refused)
                outcome.retry_after_s, outcome.backoff_target = 60.0, mailbox_target("pop", mailbox)
                return outcome
            return self.login_refused(ctx, probe, status, code, refused)
        count, size = probe.time("stat", conn.stat)
        probe.say("C: STAT")
        probe.say(f"S: +OK {count} {size}")
        summary = f"STAT of {mailbox}: {count} message(s) waiting ({size} bytes)"
        metrics: dict = {"message_count": count, "size_bytes": size}
        age = None
        if options.backlog_age and count:
            age, said = self._oldest_age(conn, ctx, probe)
            metrics["oldest_message_age_s"] = age
            summary += f"; {said}"
        try:
            conn.quit()
        except (poplib.error_proto, OSError):
            pass
        status, code, words = mailflow.judge(age, options, ctx.integration.system)
        summary += words
        if options.backlog_warn and count > options.backlog_warn and status == Status.OK:
            system = ctx.integration.system or "the consuming system"
            return probe.outcome(Status.WARN, "inbox_backlog", f"{summary}, over {options.backlog_warn}: is "
                                 f"{system} still collecting mail?", **metrics)
        return probe.outcome(status, code, summary, **metrics)

    @staticmethod
    def _oldest_age(conn: poplib.POP3, ctx: CheckContext, probe: Probe) -> tuple[float | None, str]:
        """The age of message 1 (the oldest in the maildrop) from the headers of ``TOP 1 0``, and what to say of
        it: which header dated it, or why its age is unknown."""
        probe.say("C: TOP 1 0")
        try:
            reply, lines, _ = probe.time("top", lambda: conn.top(1, 0))
        except poplib.error_proto as exc:
            refusal = _text(exc.args[0] if exc.args else exc)
            probe.say(f"S: {refusal}")
            return None, f"message 1's age unknown: TOP 1 0 answered '{refusal}'"
        probe.say(f"S: {_text(reply)} ({len(lines)} header line(s))")
        when, header = mailflow.header_date(lines)
        if when is None:
            return None, "message 1's age unknown: neither its Received nor its Date header holds a date"
        age = max(0.0, (ctx.now() - when).total_seconds())
        return age, f"message 1 (the oldest) {mailflow.age_words(age)} old by its {header} header"

    @staticmethod
    def _authenticate(conn: poplib.POP3, mailbox: str, line: str, probe: Probe) -> str | None:
        """AUTH XOAUTH2 in two steps; returns the refusal text, or None when logged in."""

        def send(line: str) -> str:
            conn._putcmd(line)  # type: ignore[attr-defined]  # poplib's own, not in typeshed
            return _text(conn._getline()[0])  # type: ignore[attr-defined]  # poplib's own, not in typeshed

        def step(line: str, shown: str) -> str:
            probe.say(f"C: {shown}")
            reply = send(line)
            probe.say(f"S: {reply}")
            return reply

        def login() -> str | None:
            reply = step("AUTH XOAUTH2", "AUTH XOAUTH2")
            if not reply.startswith("+") or reply.startswith("+OK"):
                return reply
            reply = step(line, SASL_PLACEHOLDER)
            if reply.startswith("+") and not reply.startswith("+OK"):
                challenge = decode_challenge(reply[1:].strip())
                probe.say(f"S: (challenge) {challenge}")
                reply = step("", "")  # answer the error challenge with an empty line (RFC 7628)
            return None if reply.startswith("+OK") else reply

        return probe.time("auth", login)
