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
from collections.abc import Mapping
from typing import Any, ClassVar

import jwt
import requests
from pydantic import BaseModel, ConfigDict, field_validator

from mailwarden.checks import TOKEN_KIND, permissions
from mailwarden.checks.base import CheckContext, Flow, Outcome, Permission, Status, token_target
from mailwarden.checks.diagnoses import AADSTS_STATUS, classify_aadsts
from mailwarden.checks.network import http_session, network_outcome
from mailwarden.checks.replies import REPLIES, TokenReply
from mailwarden.endpoints import scope_prefixes
from mailwarden.errors import NoRefreshToken, SecretReferenceError
from mailwarden.redact import redact


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


THROTTLE_BACKOFF_S = 60.0  # no Retry-After given: wait a minute before asking the identity provider again


_UNSET: Any = object()


def refused_outcome(result: dict[str, Any], what: str, target: str | None = None,
                    reply: TokenReply | None = _UNSET) -> Outcome:
    """An MSAL error dict -> an outcome keyed on error_codes (never on the text): a refusal is `fail`; the
    throttling codes (50196, 90055) are `warn` `throttled` and 90033 is `error` `service_unavailable`, with the
    identity provider's wait honoured on ``target``."""
    codes = result.get("error_codes") or []
    if reply is _UNSET:
        reply = REPLIES.last()  # asked on the thread that made the request
    wait = (reply.retry_after_s() if reply is not None else None)
    if result.get("error") == "temporarily_unavailable" and not codes:
        # HTTP 429/503 from the token endpoint: Entra throttles; nothing is known about the credential.
        wait = wait or THROTTLE_BACKOFF_S
        return Outcome(Status.WARN, "throttled", f"{what} throttled by the identity provider "
                       f"(temporarily_unavailable); the next run waits {wait:g} s",
                       retry_after_s=wait, backoff_target=target, metrics={"error": result.get("error")})
    transient = next((AADSTS_STATUS[int(c)] for c in codes if str(c).isdigit() and int(c) in AADSTS_STATUS), None)
    if transient is not None:
        code = classify_aadsts(codes)
        first = (result.get("error_description") or "").split("\r\n")[0].split(" Trace ID:")[0]
        wait = wait or (THROTTLE_BACKOFF_S if transient == "warn" else None)
        return Outcome(Status(transient), code, f"{what}: the identity provider answered {redact(first)}"
                       + (f"; the next run waits {wait:g} s" if wait else ""),
                       retry_after_s=wait, backoff_target=target if wait else None,
                       metrics={"error": result.get("error"), "error_codes": codes})
    code = classify_aadsts(codes)
    first = (result.get("error_description") or "").split("\r\n")[0].split(" Trace ID:")[0]
    label = f"AADSTS{codes[0]}" if codes else result.get("error", "error")
    first = first.removeprefix(f"{label}: ")
    return Outcome(Status.FAIL, code, f"{what} refused: {label}: {redact(first)}",
                   metrics={"error": result.get("error"), "error_codes": codes,
                            "suberror": result.get("suberror")},
                   raw=redact({k: v for k, v in result.items() if k != "access_token"}) if code == "unclassified"
                   else None)


def _body_kind(reply: TokenReply) -> str:
    text = reply.text.strip()
    if not text:
        return "an empty body"
    if text[:1] in "{[":
        return "a JSON body"
    if "<html" in text[:200].lower() or "<!doctype" in text[:200].lower():
        return "an HTML page"
    return f"plain text '{redact(text[:60])}'"


def reply_outcome(reply: TokenReply, what: str, target: str | None = None) -> Outcome:
    """A token-endpoint reply MSAL could not read (a 5xx, or a body that is not JSON), by its HTTP status:
    429 is `throttled` (warn), a 5xx is `service_unavailable` (error); the wait the reply asks for is kept."""
    wait = reply.retry_after_s()
    body = _body_kind(reply)
    if reply.status >= 500 and body == "a JSON body":
        try:
            parsed = json.loads(reply.text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and parsed.get("error_codes"):
            return refused_outcome(parsed, what, target)
    if reply.status == 429:
        wait = wait or THROTTLE_BACKOFF_S
        return Outcome(Status.WARN, "throttled", f"{what}: the identity provider answered HTTP 429 with {body}; "
                       f"the next run waits {wait:g} s", retry_after_s=wait, backoff_target=target,
                       metrics={"http_status": 429})
    if reply.status >= 500:
        return Outcome(Status.ERROR, "service_unavailable", f"{what}: the identity provider answered HTTP "
                       f"{reply.status} with {body}" + (f"; the next run waits {wait:g} s" if wait else ""),
                       retry_after_s=wait, backoff_target=target if wait else None,
                       metrics={"http_status": reply.status})
    return Outcome(Status.ERROR, "unclassified", f"{what}: the identity provider answered HTTP {reply.status} "
                   f"with {body}, which is not an OAuth reply", metrics={"http_status": reply.status},
                   raw=redact(reply.text[:2000]))


def token_failure(exc: BaseException, what: str, authority: str, target: str | None = None,
                  token_url: str | None = None, client_id: str | None = None,
                  reply: TokenReply | None = _UNSET) -> Outcome | None:
    """An exception raised while asking the token endpoint, as an outcome; None when it is none of these (MSAL
    raises a bare ValueError when the authority's discovery document fails: the caller reads that one)."""
    import msal

    if reply is _UNSET:
        reply = REPLIES.last(token_url, client_id)
    if isinstance(exc, msal.exceptions.MsalServiceError) or isinstance(exc, json.JSONDecodeError):
        if reply is not None:
            return reply_outcome(reply, what, target)
        status = str(exc).removeprefix("HTTP Error: ")
        if status.isdigit():
            return reply_outcome(TokenReply(int(status), {}, "", token_url or ""), what, target)
        # a body that is not JSON, replayed by MSAL from its own cache: MSAL keeps only 429/5xx replies so
        return Outcome(Status.WARN, "throttled", f"{what}: the identity provider's earlier 429/5xx reply is "
                       f"still in force (MSAL replays it until its Retry-After ends)",
                       retry_after_s=THROTTLE_BACKOFF_S, backoff_target=target)
    if isinstance(exc, requests.RequestException | OSError):
        return network_outcome(exc, authority, login_host=True) or Outcome(Status.ERROR, "idp_unreachable",
                                                                           redact(exc))
    return None


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
    kind: ClassVar[str] = TOKEN_KIND
    config_model: ClassVar[type[BaseModel]] = TokenOptions
    depends_on: ClassVar[tuple[str, ...]] = ()
    # none of its own: it asks for and verifies what its integration's checks declare (and its `require`)
    needs: ClassVar[Mapping[Flow, tuple[Permission, ...]]] = {}
    uses_app_token: ClassVar[bool] = True
    needs_credential: ClassVar[bool] = True
    endpoint: ClassVar[str | None] = None  # Entra ID's token endpoint, not a mail server

    async def run(self, ctx: CheckContext) -> Outcome:
        integ = ctx.integration
        options: TokenOptions = ctx.options  # type: ignore[assignment]
        needs = permissions.needs(integ.flow, list(integ.checks), options.require)
        prefixes = scope_prefixes(ctx.endpoints, integ.flow)
        details: dict[str, Any] = {"flow": integ.flow, "tokens": {}}
        started = time.perf_counter()
        target = token_target(ctx.tenant.tenant_id, ctx.app.client_id)
        token_url = ctx.endpoints.token_endpoint(ctx.tenant.tenant_id)
        for resource in permissions.resources(needs):
            result, failure, reply = await asyncio.to_thread(self._fetch, ctx, resource, prefixes, needs)
            if failure is not None:
                if isinstance(failure, SecretReferenceError):
                    return Outcome(Status.ERROR, "config_error", failure.message())
                if isinstance(failure, NoRefreshToken):
                    return Outcome(Status.FAIL, "no_refresh_token",
                                   f"no refresh token for {integ.account} is stored in mailwarden yet")
                outcome = token_failure(failure, "Token request", ctx.endpoints.authority, target, token_url,
                                        ctx.app.client_id, reply=reply)
                if outcome is not None:
                    return outcome
                if isinstance(failure, ValueError):
                    return await asyncio.to_thread(discovery_failure, ctx, failure)
                raise failure
            if "access_token" not in result:
                outcome = refused_outcome(result, "Token request", target, reply=reply)
                if outcome.code in ("secret_invalid", "secret_expired") and ctx.app.secret:
                    return await replicating(ctx, outcome)
                return outcome
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

    @classmethod
    def _fetch(cls, ctx: CheckContext, resource: str, prefixes: dict[str, str],
               needs: list[permissions.Need]) -> tuple[dict[str, Any], BaseException | None, TokenReply | None]:
        """(MSAL's result, the exception it raised, the token endpoint's reply), read on the worker thread that
        made the request (the reply is kept per thread)."""
        REPLIES.begin()
        try:
            result = cls._request(ctx, resource, prefixes, needs)
        except Exception as exc:  # noqa: BLE001 - handed back to the event loop with the reply
            return {}, exc, REPLIES.last()
        return result, None, REPLIES.last()

    @staticmethod
    def _request(ctx: CheckContext, resource: str, prefixes: dict[str, str],
                 needs: list[permissions.Need]) -> dict[str, Any]:
        integ = ctx.integration
        if integ.flow == "app":
            return ctx.tokens.app_token(integ.app, prefixes[resource], fresh=True,
                                        tenant_name=ctx.config.tenant_name_of(integ))
        scopes = permissions.delegated_scopes(prefixes, [n for n in needs if n.resource == resource])
        return ctx.tokens.delegated_token(integ, scopes or [f"{prefixes[resource]}/User.Read"], force_refresh=True)


REPLICATION_RECHECK_S = 15.0  # how soon a refused brand-new secret is tried again


def replicating_sync(ctx: CheckContext, refused: Outcome) -> Outcome:
    """``replicating`` from a worker thread (the mailbox checks fetch their token there)."""
    loop = getattr(ctx, "loop", None)
    if loop is None:
        return refused
    return asyncio.run_coroutine_threadsafe(replicating(ctx, refused), loop).result(ctx.timeout_s)


async def replicating(ctx: CheckContext, refused: Outcome) -> Outcome:
    """A refusal of the configured secret (7000215/7000222) while Graph shows the matching credential as added
    minutes ago: Entra ID refuses a new secret for seconds to about two minutes while it replicates
    (M365_FACTS.md). Within the grace it is `warn` `secret_replicating`, re-checked in seconds; after it, the
    refusal stands. Without Graph evidence the refusal stands at once."""
    from mailwarden.checks import credentials

    try:
        configured = ctx.tokens.client_credential(ctx.integration.app)
    except SecretReferenceError:
        return refused
    if not isinstance(configured, str):
        return refused
    read = await ctx.credentials.read(ctx.integration.app)
    if not read.ok:
        return refused
    grace = float(ctx.config.defaults.replication_grace)
    now = ctx.now()
    for cred in credentials.match(read.credentials, configured):
        added = cred.start_at
        if added is None or added > now:
            continue
        age = (now - added).total_seconds()
        if age <= grace:
            left = grace - age
            return Outcome(
                Status.WARN, "secret_replicating",
                f"{refused.summary} (the secret {cred.display_name or cred.key_id} was added {age:.0f} s ago and may "
                f"still be replicating; checked again in {REPLICATION_RECHECK_S:g} s, a failure after "
                f"{grace:g} s)", recheck_s=min(REPLICATION_RECHECK_S, max(1.0, left)),
                metrics={**refused.metrics, "secret_added_at": added.isoformat(), "grace_s": grace})
    return refused
