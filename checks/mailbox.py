"""What the mailbox checks share: the token the consuming system would use, XOAUTH2, TLS, phase timing,
and turning a failure to connect into a diagnosis.

The checks walk the consuming system's own path read-only. The SASL string carries a bearer token:
it is built here, sent, and never stored or logged (transcripts record "<XOAUTH2 response>" instead).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import heapq
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from mailwarden.checks import TOKEN_KIND, permissions
from mailwarden.checks.base import CheckContext, Outcome, Status, token_target
from mailwarden.checks.network import network_outcome
from mailwarden.checks.replies import REPLIES
from mailwarden.checks.tls import mail_context
from mailwarden.checks.token import refused_outcome, replicating_sync, token_failure
from mailwarden.endpoints import scope_prefixes
from mailwarden.errors import NoRefreshToken, SecretReferenceError
from mailwarden.redact import redact

T = TypeVar("T")
SASL_PLACEHOLDER = "<XOAUTH2 response>"
# The connections of the conversation running in this worker thread: hung up when the check's timeout
# passes, so a server that drips bytes or sends lines without end cannot keep the thread (and the memory
# it reads into) after the runner has given up on the check.
_guard = threading.local()


def _hang_up(conns: list[Any]) -> None:
    for conn in conns:
        sock = getattr(conn, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def no_delay(sock: socket.socket) -> socket.socket:
    """Turn Nagle off on a check's socket. imaplib sends an AUTHENTICATE response as the base64 string and then
    its CRLF in a second write: with Nagle on, the CRLF waited for the server's (delayed) ACK of the first,
    40 ms or a round trip per login (bench/RESULTS.md)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _Watchdog:
    """One thread that hangs up the conversations whose timeout has passed. A timer thread per check cost a
    thread start and a few context switches on every check (bench/)."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._heap: list[list[Any]] = []  # [deadline, seq, conns or None once cancelled or done]
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, timeout_s: float, conns: list[Any]) -> list[Any]:
        entry = [time.monotonic() + timeout_s, next(self._seq), conns, False]  # [3]: it hung up
        with self._cv:
            heapq.heappush(self._heap, entry)
            if self._thread is None or not self._thread.is_alive():  # first use, or after a fork
                self._thread = threading.Thread(target=self._loop, name="mailwarden-watchdog", daemon=True)
                self._thread.start()
            if self._heap[0] is entry:
                self._cv.notify()
        return entry

    @staticmethod
    def cancel(entry: list[Any]) -> None:
        entry[2] = None  # left in the heap, dropped when it comes up

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._heap and self._heap[0][2] is None:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cv.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._cv.wait(delay)
                    continue
                entry = heapq.heappop(self._heap)
                conns, entry[2] = entry[2], None
                entry[3] = True
            if conns:
                _hang_up(conns)

    @staticmethod
    def fired(entry: list[Any]) -> bool:
        return bool(entry[3])


_watchdog = _Watchdog()


def xoauth2(user: str, token: str) -> bytes:
    """The raw SASL XOAUTH2 initial response (callers base64-encode it as their protocol requires)."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def xoauth2_b64(user: str, token: str) -> str:
    return base64.b64encode(xoauth2(user, token)).decode()


def decode_challenge(data: bytes | str | None) -> str:
    """A SASL error challenge (Dovecot sends base64 JSON) as readable text."""
    if not data:
        return ""
    raw = data if isinstance(data, bytes) else data.encode()
    try:
        return base64.b64decode(raw, validate=True).decode("utf-8", "replace")
    except ValueError:
        return raw.decode("utf-8", "replace")


def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """The shared context of the mail protocols (checks.tls: one CA store load per bundle, not per check)."""
    return mail_context(ca_bundle)


@dataclass
class Probe:
    """Timing per phase and the transcript of one protocol conversation (redacted as it leaves: ``lines``)."""

    phases: dict[str, float] = field(default_factory=dict)
    transcript: list[str] = field(default_factory=list)
    _started: float = field(default_factory=time.perf_counter)

    def time(self, phase: str, fn: Callable[[], T]) -> T:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            self.phases[phase] = round((time.perf_counter() - t0) * 1000, 1)

    def watch(self, conn: Any) -> None:
        """Hang ``conn`` (anything with a ``sock``) up when the check's timeout passes."""
        conns = getattr(_guard, "conns", None)
        if conns is not None:
            conns.append(conn)

    def say(self, line: str) -> None:
        self.transcript.append(line)  # redacted when it leaves the probe (``lines``): an ok result keeps none

    def lines(self) -> list[str]:
        """The transcript, redacted, each line at most 500 characters."""
        return [redact(line)[:500] for line in self.transcript]

    @property
    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self._started) * 1000

    def outcome(self, status: Status, code: str | None, summary: str, **metrics: Any) -> Outcome:
        return Outcome(status, code, summary, latency_ms=self.elapsed_ms,
                       metrics={"phases_ms": dict(self.phases), **metrics},
                       transcript=self.lines() if status != Status.OK else [])


def protocol_scopes(ctx: CheckContext, kind: str) -> tuple[str, list[str]]:
    """(resource, scopes) of the token this check's protocol takes."""
    integ = ctx.integration
    needs = [n for n in permissions.needs(integ.flow, [kind])]
    resource = needs[0].resource if needs else permissions.EXCHANGE
    prefixes = scope_prefixes(ctx.endpoints, integ.flow)
    if integ.flow == "app":
        return resource, [f"{prefixes[resource]}/.default"]
    return resource, permissions.delegated_scopes(prefixes, needs)


def fetch_token(ctx: CheckContext, kind: str) -> str | Outcome:
    """The access token the consuming system would present (reused from cache while valid), or the
    outcome explaining why there is none. Blocking: call in a worker thread."""
    integ = ctx.integration
    resource, scopes = protocol_scopes(ctx, kind)
    target = token_target(ctx.tenant.tenant_id, ctx.app.client_id)
    REPLIES.begin()
    try:
        if integ.flow == "app":
            result = ctx.tokens.app_token(integ.app, scope_prefixes(ctx.endpoints, "app")[resource],
                                          tenant_name=ctx.config.tenant_name_of(integ))
        else:
            result = ctx.tokens.delegated_token(integ, scopes)
    except SecretReferenceError as exc:
        return Outcome(Status.ERROR, "config_error", exc.message())
    except NoRefreshToken:
        return Outcome(Status.FAIL, "no_refresh_token", f"no refresh token for {integ.account} is stored yet")
    except Exception as exc:  # noqa: BLE001 - the identity provider's failures, all classified
        return token_failure(exc, f"Token for the {kind} check", ctx.endpoints.authority, target,
                             ctx.endpoints.token_endpoint(ctx.tenant.tenant_id), ctx.app.client_id) or Outcome(
            Status.ERROR, "unclassified", f"token for the {kind} check: {type(exc).__name__}: {redact(exc)}")
    if "access_token" not in result:
        outcome = refused_outcome(result, f"Token for the {kind} check", target)
        if outcome.code in ("secret_invalid", "secret_expired") and ctx.app.secret:
            return replicating_sync(ctx, outcome)
        return outcome
    return result["access_token"]


class ProtocolCheck:
    """A mailbox check that speaks a blocking protocol (imaplib, poplib, smtplib) in a worker thread,
    with the token the consuming system would present. Subclasses write ``_converse``."""

    kind: ClassVar[str]
    depends_on: ClassVar[tuple[str, ...]] = (TOKEN_KIND,)
    uses_app_token: ClassVar[bool] = True
    needs_credential: ClassVar[bool] = True
    endpoint: ClassVar[str | None]

    async def run(self, ctx: CheckContext) -> Outcome:
        return await asyncio.to_thread(self._run_blocking, ctx)

    def _run_blocking(self, ctx: CheckContext) -> Outcome:
        token = fetch_token(ctx, self.kind)  # one worker-thread hop for the token and the conversation
        if isinstance(token, Outcome):
            return token
        conns: list[Any] = []
        _guard.conns = conns
        deadline = _watchdog.arm(ctx.timeout_s, conns)
        try:
            outcome = self._converse(ctx, token)
        finally:
            _watchdog.cancel(deadline)
            _guard.conns = None
        if _watchdog.fired(deadline):
            # the server did not finish within the timeout and mailwarden hung up: whatever the socket then
            # raised (EOF, reset, a half-read line), the cause is the silence, never a reply
            endpoint = getattr(ctx.endpoints, self.endpoint or self.kind)
            return Outcome(Status.ERROR, "timeout", f"{endpoint} did not finish the {self.kind.upper()} conversation "
                           f"within {ctx.timeout_s:g} s; mailwarden hung up", latency_ms=outcome.latency_ms,
                           metrics={"phases_ms": outcome.metrics.get("phases_ms", {})},
                           transcript=outcome.transcript)
        return outcome

    def _converse(self, ctx: CheckContext, token: str) -> Outcome:  # pragma: no cover - abstract
        raise NotImplementedError

    def login_refused(self, ctx: CheckContext, probe: Probe, status: Status, code: str, reply: str,
                      **metrics: Any) -> Outcome:
        """A refused login, with the likely causes for this integration's flow when it is auth_failed."""
        who = metrics.get("login_as") or ctx.integration.mailbox
        detail = f"{self.kind.upper()} login as {who} refused: {reply}"
        if code == "auth_failed":
            detail += f" ({auth_causes(ctx, self.kind)})"
        return probe.outcome(status, code, detail, reply=reply, **metrics)


def connect_failure(exc: BaseException, host: str, probe: Probe) -> Outcome:
    outcome = network_outcome(exc, host, default="connection_refused")
    if outcome is None:
        outcome = Outcome(Status.ERROR, "unexpected_reply", f"{host}: {type(exc).__name__}: {redact(exc)}")
    outcome.latency_ms = probe.elapsed_ms
    outcome.metrics = {"phases_ms": dict(probe.phases), **outcome.metrics}
    outcome.transcript = probe.lines()
    return outcome


def auth_causes(ctx: CheckContext, kind: str) -> str:
    """The likely causes of a refused mailbox login, for this integration's flow."""
    integ = ctx.integration
    need = permissions.needs(integ.flow, [kind])
    perm = need[0].label if need else "the protocol permission"
    # a mailbox check runs only once the token check passed, and that check saw the permission in the token
    checked = TOKEN_KIND in integ.checks
    if integ.flow == "app":
        return (f"likely: {'' if checked else f'the app lacks {perm}, '}its service principal is not registered in "
                f"Exchange (New-ServicePrincipal), or it has no FullAccess on {integ.mailbox} (Add-MailboxPermission)")
    scope = [] if checked else [f"the token lacks {perm}"]
    if kind == "smtp":  # a delegate signs in to SMTP as itself: the shared mailbox's permissions do not apply here
        causes = [*scope, f"{integ.account} has no Exchange Online mailbox (licence)",
                  f"the token's user is not {integ.account}"]
    else:
        shared = (integ.account or "").lower() != integ.mailbox.lower()
        causes = [*scope, *([f"{integ.account} has no FullAccess on the shared mailbox {integ.mailbox}"]
                            if shared else []), f"{kind.upper()} is disabled for the mailbox"]
    return "likely: " + (", ".join(causes[:-1]) + ", or " + causes[-1] if len(causes) > 1 else causes[0])
