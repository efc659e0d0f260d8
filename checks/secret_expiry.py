"""`secret_expiry`: days until the credential the integration uses expires, read from Graph.

The app's passwordCredentials/keyCredentials are read through the tenant's monitor app, once per
cycle per app (monitor.credentials). The credential in use is found by ``hint`` (the first three
characters of the configured secret) or by certificate thumbprint. When Graph cannot be read, the
``secret_expires_on`` date from config stands in, and the result says so. Without it the result names why Graph
could not be read: ``graph_unreadable`` (the monitor app lacks access) is said only then; a throttled read is
``throttled`` (warn), a 5xx ``service_unavailable``, an unreachable sign-in host ``idp_unreachable`` (error).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, time
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from mailwarden import days
from mailwarden.checks import credentials
from mailwarden.checks.base import CheckContext, Flow, Outcome, Permission, Status
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
    depends_on: ClassVar[tuple[str, ...]] = ()
    needs: ClassVar[Mapping[Flow, tuple[Permission, ...]]] = {}
    uses_app_token: ClassVar[bool] = False
    needs_credential: ClassVar[bool] = False  # read through the monitor app; the copy only names the one in use
    endpoint: ClassVar[str | None] = None

    async def run(self, ctx: CheckContext) -> Outcome:
        options: SecretExpiryOptions = ctx.options  # type: ignore[assignment]
        warning = options.warning_days
        if warning is None:
            warning = ctx.config.threshold(ctx.integration, "expiry_warning_days")
        try:
            configured = None if ctx.app.observe_only else ctx.tokens.client_credential(ctx.integration.app)
        except SecretReferenceError as exc:
            return Outcome(Status.ERROR, "config_error", exc.message())
        read: credentials.CredentialRead = await ctx.credentials.read(ctx.integration.app)
        now = ctx.now()
        if not read.ok:
            return self._fallback(ctx, read, warning, now)
        if configured is None:
            return self._observed(ctx, read, warning, now)
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

    def _observed(self, ctx: CheckContext, read: credentials.CredentialRead, warning: int, now: datetime) -> Outcome:
        """An observe_only app: mailwarden holds no copy that names the credential in use. The sign-in log names it
        for app-only sign-ins (the key the consuming system last signed in with); else every credential still valid
        may be the one in use, and the soonest to end is judged, saying so."""
        creds = read.credentials
        system = ctx.integration.system or "the consuming system"
        if not creds:  # a public client or a federated credential needs none: not a failure in itself
            return Outcome.ok(f"app {ctx.app.client_id} has no secret and no certificate: nothing of it expires ("
                              f"{system} signs in as a public client or with a federated credential, or not at all: "
                              f"the consumer check says which)",
                              metrics={"credentials_on_app": 0, "source": "graph", "in_use": "none"})
        used, unknown = self._key_in_use(ctx, creds)
        if used is not None:
            cred, at = used
            word = "secret" if cred.kind == "client_secret" else "certificate"
            why = f"the one {system} last signed in with, at {at:%Y-%m-%d %H:%M} UTC (sign-in log)"
        else:
            valid = [c for c in creds if c.end_at is None or c.end_at > now]
            pool = valid or creds  # all ended: the last to end says when the app stopped working
            ending = [c for c in pool if c.end_at is not None]
            if len(ending) < len(pool) and valid:  # one never ends: the app keeps a credential
                cred = next(c for c in pool if c.end_at is None)
            elif valid:
                cred = min(ending, key=lambda c: c.end_at)  # type: ignore[arg-type, return-value]
            else:
                cred = max(ending, key=lambda c: c.end_at)  # type: ignore[arg-type, return-value]
            word = "secret" if cred.kind == "client_secret" else "certificate"
            if not valid:
                why = (f"every secret and certificate of the app has ended, this one last; {system} cannot sign in "
                       "with one (a federated credential or a public client needs none: the consumer check says)")
            elif len(valid) == 1:
                why = f"the app's only valid secret or certificate, so the one {system} uses if it signs in with one"
            else:
                why = (f"the soonest to end of the app's {len(valid)} valid credentials; which one {system} uses is "
                       f"unknown: {unknown}")
        metrics = self._metrics(cred, None, read, "graph")
        metrics["in_use"] = "signin_log" if used is not None else "unknown"
        name = cred.display_name or cred.key_id
        if cred.end_at is None:
            return Outcome.ok(f"{word} {name} never expires ({why})", metrics=metrics)
        status, code, left = judge(cred.end_at, now, warning, cred.kind)
        metrics["days_left"] = left
        return Outcome(status, code, f"{self._summary(word, name, cred.end_at, now)}: {why}", metrics=metrics)

    @staticmethod
    def _key_in_use(ctx: CheckContext, creds: list[credentials.AppCredential]
                    ) -> tuple[tuple[credentials.AppCredential, datetime] | None, str]:
        """The credential the consuming system last signed in with (app-only sign-ins name it), or why unknown."""
        if ctx.integration.flow == "delegated":
            return None, "delegated sign-ins do not name the credential (only app-only sign-ins do)"
        window = ctx.signins.window(ctx.integration) if ctx.signins is not None else None
        if window is None or window.state != "ok":
            return None, (window.note if window is not None and window.note else
                          "the sign-in log is not read (evidence.signins and the tenant's monitor_app)")
        by_key = {c.key_id.lower(): c for c in creds}
        for s in reversed(window.signins):  # newest first
            if s.origin == "consumer" and s.error_code == 0 and (s.credential_key_id or "").lower() in by_key:
                return (by_key[s.credential_key_id.lower()], s.at), ""  # type: ignore[union-attr]
        since = f" since {window.since:%Y-%m-%d %H:%M} UTC" if window.since else ""
        return None, f"no successful app-only sign-in of it in the sign-in log{since}"

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
            code: str | None = read.code or "graph_unreadable"
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
