"""Putting a delegated refresh token into mailwarden's token store, as exactly the right user.

Three ways in, one set of checks: an auth code + PKCE sign-in through the integration's own
confidential app (headless: print the URL, paste the redirected URL back; the web flow later uses
the same functions), or a refresh token obtained elsewhere (``--import``). Before anything is stored:
the signed-in user must be the configured account (the seeds' classic failure: "Authenticated" shows
green for the wrong user), and the granted scopes must include what the integration's checks need.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msal

from checks import permissions
from checks.diagnoses import classify_aadsts
from monitor.config import IntegrationConfig
from monitor.errors import MailwardenError
from monitor.redact import register_secret
from monitor.tokens import TokenProvider, scope_prefixes


class ReauthError(MailwardenError):
    """A sign-in that must not be stored: wrong user, missing scopes, or refused by Entra ID."""

    def __init__(self, what: str, *, code: str, hint: str | None = None, account: str | None = None,
                 missing: list[str] | None = None):
        self.code, self.account, self.missing = code, account, missing or []
        super().__init__(what, hint=hint)


@dataclass
class ReauthResult:
    integration: str
    account: str
    scopes: list[str]
    details: dict[str, Any] = field(default_factory=dict)


def required_scopes(tokens: TokenProvider, integ: IntegrationConfig) -> list[str]:
    """The delegated scopes a sign-in must grant for this integration's checks."""
    token_opts = integ.checks.get("token") or {}
    needs = permissions.needs("delegated", list(integ.checks), token_opts.get("require", []))
    scopes = permissions.delegated_scopes(scope_prefixes(tokens.endpoints, "delegated"), needs)
    return scopes or [f"{tokens.endpoints.graph_resource}/User.Read"]


def _delegated(integ: IntegrationConfig) -> None:
    if integ.flow != "delegated":
        raise ReauthError(f"{integ.name} uses app-only tokens (flow: app): there is nobody to sign in",
                          code="config_error")


def start(tokens: TokenProvider, integ: IntegrationConfig, redirect_uri: str) -> dict[str, Any]:
    """Begin an auth code + PKCE flow; returns MSAL's flow dict (its ``auth_uri`` is for the browser)."""
    _delegated(integ)
    app = tokens.new_app(integ.app, msal.SerializableTokenCache())
    with warnings.catch_warnings():
        # MSAL recommends form_post; the headless flow needs the code in the URL the admin pastes back.
        warnings.filterwarnings("ignore", message="response_mode='form_post'", category=UserWarning)
        return app.initiate_auth_code_flow(required_scopes(tokens, integ), redirect_uri=redirect_uri,
                                           login_hint=integ.account, prompt="select_account")


def parse_redirect(url: str) -> dict[str, str]:
    """The query of the URL the browser was sent back to, as MSAL wants it."""
    parts = urlsplit(url.strip())
    params = {k: v[0] for k, v in parse_qs(parts.query or parts.fragment).items()}
    for value in (params.get("code"), params.get("session_state")):
        register_secret(value)
    if not params.get("code") and not params.get("error"):
        raise ReauthError("the pasted URL carries neither a code nor an error: paste the whole address "
                          "the browser was sent to after signing in", code="config_error")
    return params


def complete(tokens: TokenProvider, integ: IntegrationConfig, flow: dict[str, Any],
             auth_response: dict[str, str]) -> ReauthResult:
    """Redeem the code, check who signed in and what was granted, then store the tokens."""
    _delegated(integ)
    if auth_response.get("error"):
        _refused(auth_response, tokens, integ)
    cache = msal.SerializableTokenCache()
    app = tokens.new_app(integ.app, cache)
    try:
        result = app.acquire_token_by_auth_code_flow(flow, auth_response)
    except ValueError as exc:  # state mismatch, reused flow
        raise ReauthError(f"the sign-in response does not belong to this request ({exc})",
                          code="config_error", hint="Start again and paste the newest URL") from None
    return _accept(tokens, integ, cache, result)


def device_code(tokens: TokenProvider, integ: IntegrationConfig, show) -> ReauthResult:
    """Device-code sign-in, offered only when the app allows public client flows (MSAL offers it only
    to public clients). ``show`` receives the instruction text for the person signing in."""
    _delegated(integ)
    app_cfg = tokens.config.apps[integ.app]
    if not app_cfg.public_client:
        raise ReauthError(f"app {integ.app} does not allow public client flows, so the device-code flow is not "
                          "available", code="config_error",
                          hint="Use the sign-in URL flow (without --device-code), or enable 'Allow public client "
                               "flows' on the app registration and set public_client: true")
    cache = msal.SerializableTokenCache()
    app = tokens.new_public_app(integ.app, cache)
    flow = app.initiate_device_flow(scopes=required_scopes(tokens, integ))
    if "user_code" not in flow:
        _refused(flow, tokens, integ)
    show(flow["message"])
    result = app.acquire_token_by_device_flow(flow)
    return _accept(tokens, integ, cache, result)


def import_refresh_token(tokens: TokenProvider, integ: IntegrationConfig, refresh_token: str) -> ReauthResult:
    """Store a refresh token obtained elsewhere, after the same identity and scope checks."""
    _delegated(integ)
    register_secret(refresh_token)
    cache = msal.SerializableTokenCache()
    app = tokens.new_app(integ.app, cache)
    scopes = required_scopes(tokens, integ)
    result = app.acquire_token_by_refresh_token(refresh_token, scopes)
    return _accept(tokens, integ, cache, result)


def _refused(result: dict[str, Any], tokens: TokenProvider, integ: IntegrationConfig) -> None:
    codes = result.get("error_codes") or []
    desc = str(result.get("error_description") or result.get("error"))
    if not codes and desc.startswith("AADSTS"):
        digits = desc[6:].split(":")[0]
        codes = [int(digits)] if digits.isdigit() else []
    code = classify_aadsts(codes)
    hint = None
    if code == "consent_missing":
        hint = (f"{integ.name} needs the delegated permissions {', '.join(required_scopes(tokens, integ))}: "
                "Entra admin center > App registrations > the app > API permissions > add them and "
                "Grant admin consent, then sign in again")
    raise ReauthError(f"Entra ID refused the sign-in: {desc.splitlines()[0][:300]}", code=code, hint=hint,
                      missing=required_scopes(tokens, integ) if code == "consent_missing" else None)


def _accept(tokens: TokenProvider, integ: IntegrationConfig, cache: msal.SerializableTokenCache,
            result: dict[str, Any]) -> ReauthResult:
    if "access_token" not in result:
        _refused(result, tokens, integ)
    register_secret(result.get("refresh_token"))
    claims = result.get("id_token_claims") or {}
    who = str(claims.get("preferred_username") or claims.get("upn") or "").lower()
    if who != (integ.account or "").lower():
        raise ReauthError(
            f"signed in as {who or 'an unknown user'}, but {integ.name} must be authorised by {integ.account}; "
            "nothing was stored and the previous token is kept",
            code="wrong_account", account=who or None,
            hint=f"Sign out of Microsoft (or use a private window) and sign in as {integ.account}")
    granted = {s.rsplit("/", 1)[-1] for s in str(result.get("scope", "")).split()}
    missing = [s for s in required_scopes(tokens, integ) if s.rsplit("/", 1)[-1] not in granted]
    if missing:
        raise ReauthError(
            f"the sign-in did not grant {', '.join(missing)}; nothing was stored",
            code="consent_missing", account=who, missing=missing,
            hint="Grant admin consent for these delegated permissions: Entra admin center > App registrations > "
                 "API permissions > Grant admin consent, then sign in again")
    if not result.get("refresh_token"):
        raise ReauthError("Entra ID returned no refresh token (offline_access not granted); nothing was stored",
                          code="consent_missing", hint="Add the offline_access delegated permission", account=who,
                          missing=["offline_access"])
    tokens.save_cache(integ, cache)
    return ReauthResult(integ.name, who, sorted(granted), {"oid": claims.get("oid"), "tid": claims.get("tid")})
