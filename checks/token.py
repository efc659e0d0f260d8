"""`token`: get a token the way the integration does, and check it carries the permissions its checks need.

Always a real round trip to the token endpoint (a cached token would hide a revocation for up to an
hour). App-only: client credentials with a fresh MSAL object. Delegated: the stored refresh token with
force_refresh, saving the rotated refresh token. Then the access token's claims are decoded (no
signature check: the audience will verify it) and ``roles`` (app-only) or ``scp`` (delegated) compared
with what the integration's checks need; a missing one is ``consent_missing``, naming it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from typing import Any, ClassVar

import jwt
import requests
from pydantic import BaseModel, ConfigDict, field_validator

from checks import permissions
from checks.base import CheckContext, Outcome, Status
from checks.diagnoses import classify_aadsts
from checks.network import network_outcome
from monitor.errors import SecretReferenceError
from monitor.redact import redact
from monitor.tokens import NoRefreshToken, http_session, scope_prefixes


class TokenOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Permissions the consuming system needs beyond what the configured checks imply, as
    # "resource:Name" with resource graph or exchange: e.g. "exchange:SMTP.SendAsApp",
    # "graph:Mail.Send", "exchange:POP.AccessAsUser.All". Delegated ones are also requested.
    require: list[str] = []

    @field_validator("require")
    @classmethod
    def _shape(cls, v: list[str]) -> list[str]:
        for item in v:
            resource, sep, name = item.partition(":")
            if not sep or resource not in (permissions.GRAPH, permissions.EXCHANGE) or not name:
                raise ValueError(f"{item!r}: write 'graph:Name' or 'exchange:Name'")
        return v


THROTTLE_BACKOFF_S = 60.0  # MSAL's error dict carries no Retry-After: wait a minute before asking again


def refused_outcome(result: dict[str, Any], what: str) -> Outcome:
    """An MSAL error dict -> a `fail` outcome keyed on error_codes (never on the text)."""
    codes = result.get("error_codes") or []
    if result.get("error") == "temporarily_unavailable" and not codes:
        # HTTP 429/503 from the token endpoint: Entra throttles; nothing is known about the credential.
        return Outcome(Status.WARN, "throttled", f"{what} throttled by the identity provider "
                       f"(temporarily_unavailable); the next run waits {THROTTLE_BACKOFF_S:g} s",
                       retry_after_s=THROTTLE_BACKOFF_S, metrics={"error": result.get("error")})
    code = classify_aadsts(codes)
    first = (result.get("error_description") or "").split("\r\n")[0].split(" Trace ID:")[0]
    label = f"AADSTS{codes[0]}" if codes else result.get("error", "error")
    first = first.removeprefix(f"{label}: ")
    return Outcome(Status.FAIL, code, f"{what} refused: {label}: {redact(first)}",
                   metrics={"error": result.get("error"), "error_codes": codes,
                            "suberror": result.get("suberror")},
                   raw=redact({k: v for k, v in result.items() if k != "access_token"}) if code == "unclassified"
                   else None)


def claims_of(access_token: str) -> dict[str, Any]:
    """The claims of a JWT access token, unverified: the token is the identity provider's answer to this very
    request, read only to see what it grants. PyJWT's unverified decode tested each character of the token
    in Python: about 0.6 ms CPU per token check (bench/). Malformed: jwt.DecodeError, as PyJWT raises."""
    parts = access_token.split(".")
    if len(parts) != 3:
        raise jwt.DecodeError("Not enough segments")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise jwt.DecodeError(f"Invalid payload: {type(exc).__name__}") from None
    if not isinstance(claims, dict):
        raise jwt.DecodeError("Invalid payload string: must be a json object")
    return claims


def granted(claims: dict[str, Any], flow: str) -> set[str]:
    if flow == "app":
        return set(claims.get("roles") or [])
    return set(str(claims.get("scp") or "").split())


def discovery_failure(ctx: CheckContext, exc: BaseException) -> Outcome:
    """MSAL raises a bare ValueError when the authority's discovery document fails (unknown tenant,
    wrong host). Fetch it once more to read Microsoft's answer."""
    url = f"{ctx.endpoints.authority_for(ctx.tenant.tenant_id)}/v2.0/.well-known/openid-configuration"
    try:
        resp = http_session(ctx.endpoints).get(url, timeout=ctx.timeout_s)
    except Exception as probe_exc:  # noqa: BLE001 - classified below
        return network_outcome(probe_exc, ctx.endpoints.authority) or Outcome(
            Status.ERROR, "idp_unreachable", f"{ctx.endpoints.authority}: {redact(probe_exc)}")
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if isinstance(body, dict) and body.get("error_codes"):
        return refused_outcome(body, f"Authority {ctx.tenant.tenant_id}")
    return Outcome(Status.ERROR, "unclassified",
                   f"the authority's discovery document failed (HTTP {resp.status_code})",
                   raw=redact(resp.text[:2000]))


class TokenCheck:
    kind: ClassVar[str] = "token"
    config_model: ClassVar[type[BaseModel]] = TokenOptions
    depends_on_token: ClassVar[bool] = False

    async def run(self, ctx: CheckContext) -> Outcome:
        integ = ctx.integration
        options: TokenOptions = ctx.options  # type: ignore[assignment]
        needs = permissions.needs(integ.flow, list(integ.checks), options.require)
        prefixes = scope_prefixes(ctx.endpoints, integ.flow)
        details: dict[str, Any] = {"flow": integ.flow, "tokens": {}}
        started = time.perf_counter()
        for resource in permissions.resources(needs):
            try:
                result = await asyncio.to_thread(self._fetch, ctx, resource, prefixes, needs)
            except SecretReferenceError as exc:
                return Outcome(Status.ERROR, "config_error", exc.message())
            except NoRefreshToken:
                return Outcome(Status.FAIL, "no_refresh_token",
                               f"no refresh token for {integ.account} is stored in mailwarden yet")
            except ValueError as exc:
                return await asyncio.to_thread(discovery_failure, ctx, exc)
            except requests.RequestException as exc:
                return network_outcome(exc, ctx.endpoints.authority) or Outcome(
                    Status.ERROR, "idp_unreachable", redact(exc))
            if "access_token" not in result:
                return refused_outcome(result, "Token request")
            claims = claims_of(result["access_token"])
            have = granted(claims, integ.flow)
            details["tokens"][resource] = {
                "aud": claims.get("aud"),
                "granted": sorted(have),
                "expires_in_s": result.get("expires_in"),
            }
            for need in needs:
                if need.resource == resource and not have.intersection(need.any_of):
                    kind_word = "application permission (role)" if integ.flow == "app" else "delegated scope"
                    by = "the integration's config (checks.token.require)" if need.why == permissions.REQUIRED \
                        else f"the {need.why} check"
                    return Outcome(
                        Status.FAIL, "consent_missing",
                        f"the token lacks the {kind_word} {need.label}, needed by {by}: "
                        f"admin consent was removed or never granted",
                        metrics={**details, "permission": need.label, "needed_by": need.why})
        latency = (time.perf_counter() - started) * 1000
        summary = "; ".join(
            f"{r}: {', '.join(t['granted']) or 'no permissions'}" for r, t in details["tokens"].items())
        return Outcome(Status.OK, None, f"token issued ({summary})", latency_ms=latency, metrics=details)

    @staticmethod
    def _fetch(ctx: CheckContext, resource: str, prefixes: dict[str, str],
               needs: list[permissions.Need]) -> dict[str, Any]:
        integ = ctx.integration
        if integ.flow == "app":
            return ctx.tokens.app_token(integ.app, prefixes[resource], fresh=True)
        scopes = permissions.delegated_scopes(prefixes, [n for n in needs if n.resource == resource])
        return ctx.tokens.delegated_token(integ, scopes or [f"{prefixes[resource]}/User.Read"], force_refresh=True)
