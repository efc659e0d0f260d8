"""`secret_expiry`: days until the credential the integration uses expires, read from Graph.

The app's passwordCredentials/keyCredentials are read through the tenant's monitor app, once per
cycle per app (monitor.credentials). The credential in use is found by ``hint`` (the first three
characters of the configured secret) or by certificate thumbprint. When Graph cannot be read, the
``secret_expires_on`` date from config stands in, and the result says so. Without it the result names why Graph
could not be read: ``graph_unreadable`` (the monitor app lacks access) is said only then; a throttled read is
``throttled`` (warn), a 5xx ``service_unavailable``, an unreachable sign-in host ``idp_unreachable`` (error).
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from mailwarden import days
from mailwarden.checks import credentials
from mailwarden.checks.base import CheckContext, Outcome, Status
from mailwarden.errors import SecretReferenceError


class SecretExpiryOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    warning_days: int | None = Field(None, ge=0)  # default: defaults.expiry_warning_days


days_left = days.days_left  # one count for every surface (checks.days)


def judge(end: datetime, now: datetime, warning_days: int, kind: str) -> tuple[Status, str | None, int]:
    left = days_left(end, now)
    secret = kind == "client_secret"
    if end <= now:
        return Status.FAIL, ("secret_expired" if secret else "certificate_invalid"), left
    if left < warning_days:
        return Status.WARN, ("secret_expiring" if secret else "certificate_expiring"), left
    return Status.OK, None, left


class SecretExpiryCheck:
    kind: ClassVar[str] = "secret_expiry"
    config_model: ClassVar[type[BaseModel]] = SecretExpiryOptions
    depends_on_token: ClassVar[bool] = False

    async def run(self, ctx: CheckContext) -> Outcome:
        options: SecretExpiryOptions = ctx.options  # type: ignore[assignment]
        warning = options.warning_days
        if warning is None:
            warning = ctx.config.threshold(ctx.integration, "expiry_warning_days")
        try:
            configured = ctx.tokens.client_credential(ctx.integration.app)
        except SecretReferenceError as exc:
            return Outcome(Status.ERROR, "config_error", exc.message())
        read: credentials.CredentialRead = await ctx.credentials.read(ctx.integration.app)
        now = ctx.now()
        if not read.ok:
            return self._fallback(ctx, read, warning, now)
        candidates = credentials.match(read.credentials, configured)
        word = "secret" if isinstance(configured, str) else "certificate"
        if not candidates:
            return Outcome(
                Status.FAIL, "credential_not_found",
                f"the configured {word} matches none of the {len(read.credentials)} credential(s) on app "
                f"{ctx.app.client_id}: it was deleted, or the config names the wrong app",
                metrics={"credentials_on_app": len(read.credentials), "source": "graph"})
        cred = candidates[0]
        if cred.end_at is None:
            return Outcome.ok(f"{word} {cred.display_name or cred.key_id} never expires",
                              metrics=self._metrics(cred, None, read, "graph"))
        status, code, left = judge(cred.end_at, now, warning, cred.kind)
        return Outcome(status, code, self._summary(word, cred.display_name or cred.key_id, cred.end_at, now),
                       metrics=self._metrics(cred, left, read, "graph"))

    @staticmethod
    def _summary(word: str, name: str, end: datetime, now: datetime) -> str:
        when = end.strftime("%Y-%m-%d %H:%M UTC")
        verb = "expired" if days.expired(end, now) else "expires"
        return f"{word} {name} {verb} on {when} ({days.expiry_words(end, now)})"

    @staticmethod
    def _metrics(cred: credentials.AppCredential, left: int | None, read: credentials.CredentialRead,
                 source: str) -> dict[str, Any]:
        newer = [c for c in read.credentials if c.kind == cred.kind and c.key_id != cred.key_id
                 and c.end_at and cred.end_at and c.end_at > cred.end_at]
        return {
            "days_left": left, "expires_at": cred.end_at.isoformat() if cred.end_at else None,
            "key_id": cred.key_id, "display_name": cred.display_name, "hint": cred.hint,
            "thumbprint": cred.thumbprint, "kind": cred.kind, "source": source,
            "credentials_on_app": len(read.credentials), "newer_credentials": len(newer),
        }

    @staticmethod
    def _fallback(ctx: CheckContext, read: credentials.CredentialRead, warning: int, now: datetime) -> Outcome:
        """Graph could not be read. Only ``graph_unreadable`` says the monitor app lacks access; a throttled read
        (warn), Microsoft's transient error or an unreachable host (error) say nothing about it, and keep their
        code, with the wait Microsoft asked for."""
        expires_on = ctx.app.secret_expires_on
        why = f"Graph could not be read ({read.reason})"
        if read.code == "app_not_found":
            return Outcome(Status.FAIL, "app_not_found", read.reason or "app not found in Graph")
        if expires_on is None:
            status = Status.WARN if read.code == "throttled" else Status.ERROR
            code = read.code or "graph_unreadable"
            # the other secret_expiry checks on the monitor app wait too, repeating this status
            return Outcome(status, code, f"{why}, and no secret_expires_on is configured: expiry unknown",
                           metrics={"source": None}, retry_after_s=read.retry_after_s,
                           backoff_target=read.backoff_target if read.retry_after_s else None)
        end = datetime.combine(expires_on, time.min, tzinfo=UTC)
        status, code, left = judge(end, now, warning, "client_secret")
        return Outcome(status, code,
                       f"{why}; using secret_expires_on {expires_on.isoformat()} from config: "
                       f"{days.expiry_words(end, now)}",
                       metrics={"days_left": left, "expires_at": end.isoformat(), "source": "config",
                                "graph_error": read.code},
                       retry_after_s=read.retry_after_s)  # this check only: its status is this app's own
