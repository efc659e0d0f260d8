"""Putting a delegated refresh token into mailwarden's token store, as exactly the right user.

Three ways in, one set of checks: an auth code + PKCE sign-in through the integration's own
confidential app (headless: print the URL, paste the redirected URL back; the web flow later uses
the same functions), or a refresh token obtained elsewhere (``--import``). Before anything is stored:
the signed-in user must be the configured account (the seeds' classic failure: "Authenticated" shows
green for the wrong user), and the granted scopes must include what the integration's checks need.

Who the configured account is, Entra ID says: through Graph (the tenant's monitor app, User.Read.All) the
account may be the user's UPN, primary SMTP address or a proxy address, and the object id that signed in must
be that user's. Without Graph the evidence is weaker and the result says which was used: the object id
recorded at the integration's last accepted sign-in, else the sign-in name and the ID token's email.

A refresh token issued to a public client (the device-code flow; an import Entra ID refuses with the app's
secret, AADSTS700025) is stored as public and refreshed without the secret (M365_FACTS.md).
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, quote, urlsplit

import msal
import requests

from mailwarden.checks import TOKEN_KIND, graph_client, permissions
from mailwarden.checks.diagnoses import classify_aadsts
from mailwarden.checks.network import network_code
from mailwarden.errors import MailwardenError
from mailwarden.monitor.config import IntegrationConfig
from mailwarden.monitor.tokens import StoredToken, TokenProvider, scope_prefixes
from mailwarden.redact import redact, register_secret

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mailwarden.checks.base import Outcome

PUBLIC_CLIENT_WITH_SECRET = 700025  # "Client is public so neither 'client_assertion' nor 'client_secret' ..."
_T = TypeVar("_T")


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
    token_opts = integ.checks.get(TOKEN_KIND) or {}
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
    with _login_host(tokens, integ, "starting the sign-in"):
        app = tokens.new_app(integ.app, msal.SerializableTokenCache(), tenant_name=tokens.config.tenant_name_of(integ))
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
    with _login_host(tokens, integ, "redeeming the sign-in"):
        app = tokens.new_app(integ.app, cache, tenant_name=tokens.config.tenant_name_of(integ))
        try:
            result = app.acquire_token_by_auth_code_flow(flow, auth_response)
        except ValueError as exc:  # state mismatch, reused flow
            if isinstance(exc, json.JSONDecodeError):
                raise  # a reply that is not JSON: the login host's problem, said by _login_host
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
    with _login_host(tokens, integ, "starting the device-code sign-in"):
        app = tokens.new_public_app(integ.app, cache, tenant_name=tokens.config.tenant_name_of(integ))
        flow = app.initiate_device_flow(scopes=required_scopes(tokens, integ))
    if "user_code" not in flow:
        _refused(flow, tokens, integ)
    show(flow["message"])
    with _login_host(tokens, integ, "waiting for the device-code sign-in"):
        result = app.acquire_token_by_device_flow(flow)
    return _accept(tokens, integ, cache, result, public_client=True)


def import_refresh_token(tokens: TokenProvider, integ: IntegrationConfig, refresh_token: str) -> ReauthResult:
    """Store a refresh token obtained elsewhere, after the same identity and scope checks."""
    _delegated(integ)
    register_secret(refresh_token)
    scopes = required_scopes(tokens, integ)
    cache = msal.SerializableTokenCache()
    with _login_host(tokens, integ, "redeeming the imported refresh token"):
        app = tokens.new_app(integ.app, cache, tenant_name=tokens.config.tenant_name_of(integ))
        result = app.acquire_token_by_refresh_token(refresh_token, scopes)
    if PUBLIC_CLIENT_WITH_SECRET not in (result.get("error_codes") or []):
        return _accept(tokens, integ, cache, result)
    # Issued to a public client (a device-code sign-in elsewhere): Entra ID refuses it with the app's secret,
    # and it is redeemed, and from now on refreshed, without one.
    cache = msal.SerializableTokenCache()
    with _login_host(tokens, integ, "redeeming the imported refresh token as a public client"):
        public = tokens.new_public_app(integ.app, cache, tenant_name=tokens.config.tenant_name_of(integ))
        result = public.acquire_token_by_refresh_token(refresh_token, scopes)
    if "access_token" not in result:
        _refused(result, tokens, integ, context="the token was issued to a public client (refused with the app's "
                                                "secret: AADSTS700025), and redeeming it without the secret failed")
    return _accept(tokens, integ, cache, result, public_client=True)


_NETWORK_CODES = ("idp_unreachable", "connection_refused", "dns_error", "timeout")


@contextmanager
def _login_host(tokens: TokenProvider, integ: IntegrationConfig, doing: str) -> Iterator[None]:
    """MSAL raises when the login host gives no usable answer: requests' errors for a host it cannot reach, a bare
    ValueError when the tenant's discovery document fails (an unknown tenant: AADSTS90002), MsalServiceError or a
    JSON error for a reply that is not OAuth. Each becomes a refusal with a sentence; nothing is stored."""
    from mailwarden.checks.token import reply_outcome, token_failure
    from mailwarden.monitor.tokens import REPLIES, TokenReply

    REPLIES.begin()
    try:
        yield
    except (requests.RequestException, OSError, ValueError, msal.exceptions.MsalServiceError) as exc:
        authority = tokens.endpoints.authority
        resp = getattr(exc, "response", None)
        outcome: Outcome | None
        if isinstance(exc, requests.HTTPError) and resp is not None:  # discovery answered 5xx
            outcome = reply_outcome(TokenReply(resp.status_code, {k.lower(): v for k, v in resp.headers.items()},
                                               resp.text[:4000], str(resp.url)), "Entra ID")
        elif isinstance(exc, requests.RequestException | OSError) and network_code(exc):
            outcome = _unreachable(exc, authority)
        else:
            outcome = token_failure(exc, "Entra ID", authority, reply=REPLIES.last())
        if outcome is None:
            outcome = _discovery_failure(tokens, integ)
        if outcome is None:  # the login host answers as it should: not its failure
            raise
        said = outcome.summary.split("; the next run waits")[0].rstrip(". ")  # the check's wording, not this one's
        raise ReauthError(f"{doing} failed: {said}; nothing was stored", code=outcome.code or "unclassified",
                          hint=_login_hint(tokens, integ, outcome.code, outcome.retry_after_s)) from None


def _unreachable(exc: BaseException, authority: str):
    """The login host gave no answer: one short clause (the token check's summary carries the raw error too)."""
    from mailwarden.checks.base import Outcome, Status
    from mailwarden.checks.network import WORDS, tls_words

    code = network_code(exc)
    if code == "tls_error":
        return Outcome(Status.ERROR, code, f"the login host {authority} {tls_words(exc, authority)}")
    return Outcome(Status.ERROR, "idp_unreachable",
                   f"the login host {authority} {WORDS.get(code or '', 'could not be reached')}")


def _discovery_failure(tokens: TokenProvider, integ: IntegrationConfig):
    """What is wrong with the tenant's discovery document, as an outcome (None when nothing is): MSAL raises a bare
    ValueError for it, so it is read once more for Entra ID's own answer (AADSTS90002 for an unknown tenant)."""
    from mailwarden.checks.base import Outcome, Status
    from mailwarden.checks.token import refused_outcome
    from mailwarden.monitor.tokens import http_session

    tenant_id = tokens.config.integration_tenant(integ).tenant_id
    url = f"{tokens.endpoints.authority_for(tenant_id)}/v2.0/.well-known/openid-configuration"
    try:
        resp = http_session(tokens.endpoints).get(url, timeout=tokens.timeout_s)
    except (requests.RequestException, OSError) as exc:
        return _unreachable(exc, tokens.endpoints.authority)
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error_codes"):
        return refused_outcome(body, f"Entra ID (tenant {tenant_id})")
    if resp.status_code == 200 and isinstance(body, dict) and body.get("token_endpoint"):
        return None
    return Outcome(Status.ERROR, "unclassified", f"the discovery document of tenant {tenant_id} ({url}) is not "
                   f"usable: HTTP {resp.status_code}, {'JSON' if body is not None else 'not JSON'}")


def _login_hint(tokens: TokenProvider, integ: IntegrationConfig, code: str | None, wait_s: float | None) -> str:
    tenant_name = tokens.config.tenant_name_of(integ)
    tenant_id = tokens.config.tenants[tenant_name].tenant_id
    authority = tokens.endpoints.authority
    if code == "tenant_not_found":
        return (f"Entra ID knows no tenant {tenant_id}: copy the Tenant ID from Entra admin center > Identity > "
                f"Overview into tenants.{tenant_name}.tenant_id (and check cloud) in the config, then try "
                "again")
    if code in _NETWORK_CODES:
        return (f"Check that this host reaches {authority} over HTTPS (firewall, proxy) and that cloud and "
                "endpoints in the config name the right cloud, then try again")
    if code == "tls_error":
        return ("If a proxy inspects TLS, add its CA as endpoints.ca_bundle in the config; check this host's "
                "clock; then try again")
    if code in ("service_unavailable", "throttled"):
        when = f"in {wait_s:g} s or later (Entra ID asked to wait that long)" if wait_s else "later"
        return ("Check Microsoft 365 service health (admin.microsoft.com > Health > Service health) and try "
                f"again {when}")
    return f"Check cloud, endpoints and tenants.{tenant_name} in the config, then try again"


def _refused(result: dict[str, Any], tokens: TokenProvider, integ: IntegrationConfig, *,
             context: str | None = None) -> None:
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
    if code == "public_client_token" and hint is None:
        hint = (f"The token belongs to a public client: enable 'Allow public client flows' on the app registration "
                f"(and public_client: true for app {integ.app}), or sign in without --import")
    lead = f"{context}: " if context else ""
    raise ReauthError(f"{lead}Entra ID refused the sign-in: {desc.splitlines()[0][:300]}", code=code, hint=hint,
                      missing=required_scopes(tokens, integ) if code == "consent_missing" else None)


def _accept(tokens: TokenProvider, integ: IntegrationConfig, cache: msal.SerializableTokenCache,
            result: dict[str, Any], *, public_client: bool = False) -> ReauthResult:
    if "access_token" not in result:
        _refused(result, tokens, integ)
    register_secret(result.get("refresh_token"))
    claims = result.get("id_token_claims") or {}
    signed = SignedIn.of(claims)
    who = signed.name
    account = integ.account or ""
    stored = tokens.stored_token(integ.name)
    recorded = stored.oid if stored and (stored.account or "").lower() == account.lower() else None
    verdict = judge(account, signed, read_directory(tokens, integ, signed.oid), recorded)
    if not verdict.accepted:
        hint = f"Sign out of Microsoft (or use a private window) and sign in as {account}"
        if verdict.evidence != "graph":
            tenant = tokens.config.tenant_name_of(integ)
            hint += (f". If {who or 'that user'} is {account} under another name, give the tenant's monitor app "
                     f"(tenants.{tenant}.monitor_app) the User.Read.All application permission with admin consent, "
                     f"so that Entra ID can say who {account} is")
        raise ReauthError(
            f"signed in as {who or 'an unknown user'}, but {integ.name} must be authorised by {account} "
            f"({verdict.reason}); nothing was stored and the previous token is kept",
            code="wrong_account", account=who or None, hint=hint)
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
    tokens.save_cache(integ, cache, signed_in=StoredToken(public_client=public_client, oid=signed.oid))
    return ReauthResult(integ.name, who, sorted(granted), {
        "oid": claims.get("oid"), "tid": claims.get("tid"), "public_client": public_client,
        "evidence": verdict.evidence, "identity": verdict.reason})


# -- who the configured account is -------------------------------------------------------------------------

@dataclass(frozen=True)
class SignedIn:
    """The account that signed in, from the ID token's claims."""

    oid: str | None
    name: str  # preferred_username (or upn), lower-case: the UPN in work accounts
    email: str | None  # the primary SMTP address, when the token carries it

    @classmethod
    def of(cls, claims: dict[str, Any]) -> SignedIn:
        email = str(claims.get("email") or "").strip().lower()
        return cls(str(claims["oid"]) if claims.get("oid") else None,
                   str(claims.get("preferred_username") or claims.get("upn") or "").strip().lower(), email or None)


@dataclass(frozen=True)
class DirectoryUser:
    """A user as Graph describes it (``$select=id,userPrincipalName,mail,proxyAddresses``)."""

    id: str
    upn: str
    mail: str | None = None
    proxy_addresses: tuple[str, ...] = ()

    @classmethod
    def of(cls, body: dict[str, Any]) -> DirectoryUser:
        return cls(str(body.get("id") or ""), str(body.get("userPrincipalName") or ""), body.get("mail") or None,
                   tuple(str(p) for p in body.get("proxyAddresses") or ()))

    def addresses(self) -> list[str]:
        """UPN, mail and the SMTP proxy addresses ("SMTP:" primary, "smtp:" aliases; prefix stripped), lower-case,
        each once. SIP:, X500: and other address types name no mailbox to sign in as."""
        smtp = [p.split(":", 1)[1] for p in self.proxy_addresses if p[:5].lower() == "smtp:"]
        out = [self.upn, self.mail or "", *smtp]
        return list(dict.fromkeys(a.strip().lower() for a in out if a and a.strip()))

    def named_by(self, account: str) -> str | None:
        """How ``account`` names this user (its UPN, its mail, one of its proxy addresses), or None."""
        want = account.strip().lower()
        if want == self.upn.lower():
            return "UPN"
        if want == (self.mail or "").lower():
            return "mail (primary SMTP address)"
        return "proxy address" if want in self.addresses() else None


@dataclass(frozen=True)
class DirectoryRead:
    """What Graph said: the user whose UPN (or id) the account is, or else the signed-in user (the account may
    be its mail or a proxy address, which ``/users/{x}`` does not resolve); or why Graph could not be read."""

    account_user: DirectoryUser | None = None
    signed_in_user: DirectoryUser | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    evidence: str  # graph | recorded_oid | sign_in_name | id_token_email | none
    reason: str


def judge(account: str, signed: SignedIn, directory: DirectoryRead, recorded_oid: str | None) -> Verdict:
    """Is the signed-in user the configured account? Pure: Graph's word when there is one, else the weaker
    evidence, strongest first, each saying what it compared."""
    want = account.strip().lower()
    oid = (signed.oid or "").lower()
    said = f"{signed.name or 'an unknown user'} (id {signed.oid or 'unknown'})"
    if directory.account_user is not None:
        u = directory.account_user
        if oid and oid == u.id.lower():
            return Verdict(True, "graph", f"Entra ID (Graph) resolves {account} to {u.upn} (id {u.id}), the user "
                                          "who signed in")
        return Verdict(False, "graph", f"Entra ID (Graph) resolves {account} to {u.upn} (id {u.id}), not to "
                                       f"{said}")
    if directory.signed_in_user is not None:
        u = directory.signed_in_user
        how = u.named_by(want)
        if how and oid and oid == u.id.lower():
            return Verdict(True, "graph", f"Entra ID (Graph) lists {account} as the {how} of {u.upn} (id {u.id}), "
                                          "the user who signed in")
        return Verdict(False, "graph", f"Entra ID (Graph) has no user whose UPN is {account}, and {account} is not "
                                       f"an address of {u.upn} (id {u.id}), who signed in "
                                       f"(its addresses: {', '.join(u.addresses())})")
    lead = f"could not read the account from Graph ({directory.problem or 'not asked'})"
    if recorded_oid and oid and oid == recorded_oid.lower():
        return Verdict(True, "recorded_oid", f"{lead}: compared the object id with the sign-in last accepted for "
                                             f"{account}: the same user (id {signed.oid})")
    if signed.name and signed.name == want:
        other = (f"; the sign-in last accepted for {account} was by another object id ({recorded_oid}): "
                 "the account may have been deleted and created again") if recorded_oid else ""
        return Verdict(True, "sign_in_name", f"{lead}: compared the sign-in name only{other}")
    if signed.email and signed.email == want and not recorded_oid:
        return Verdict(True, "id_token_email", f"{lead}: compared the sign-in name and the ID token's email "
                                               f"({signed.email}) only")
    if recorded_oid:
        return Verdict(False, "recorded_oid", f"{lead}: {said} is neither named {account} nor the user whose "
                                              f"sign-in was last accepted for it (id {recorded_oid})")
    return Verdict(False, "sign_in_name", f"{lead}: compared the sign-in name and the ID token's email "
                                          f"({signed.email or 'none'}) only")


def read_directory(tokens: TokenProvider, integ: IntegrationConfig, oid: str | None) -> DirectoryRead:
    """Ask Graph, with the tenant's monitor app, who the configured account is. Blocking (the flows run in a
    worker thread); never raises: a failure is the ``problem`` the weaker evidence then names."""
    return _blocking(lambda: _read_directory(tokens, integ, oid))


def _blocking(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(1) as pool:  # called on a thread that runs a loop: not on that loop
        return pool.submit(lambda: asyncio.run(make())).result()


async def _read_directory(tokens: TokenProvider, integ: IntegrationConfig, oid: str | None) -> DirectoryRead:
    tenant_name = tokens.config.tenant_name_of(integ)
    monitor_app = tokens.config.tenants[tenant_name].monitor_app
    if not monitor_app:
        return DirectoryRead(problem=f"tenant {tenant_name} names no monitor_app")
    if not oid:
        return DirectoryRead(problem="the sign-in's ID token carries no oid")
    endpoints = tokens.endpoints
    try:
        # fresh: a sign-in is rare, and a cached token would hide User.Read.All granted since it was issued
        result = await asyncio.to_thread(lambda: tokens.app_token(monitor_app, endpoints.graph_resource, fresh=True))
    except MailwardenError as exc:
        return DirectoryRead(problem=f"the monitor app {monitor_app} has no usable credential: {exc.what}")
    except Exception as exc:  # noqa: BLE001 - any failure only weakens the evidence, and says so
        return DirectoryRead(problem=f"the monitor app {monitor_app} got no Graph token "
                                     f"({network_code(exc) or type(exc).__name__})")
    if "access_token" not in result:
        codes = result.get("error_codes") or []
        return DirectoryRead(problem=f"the monitor app {monitor_app} got no Graph token "
                                     f"(AADSTS{codes[0] if codes else '?'}: {classify_aadsts(codes)})")
    headers = {"Authorization": f"Bearer {result['access_token']}"}
    params = {"$select": "id,userPrincipalName,mail,proxyAddresses"}
    try:
        async with graph_client.capped_client(verify=graph_client.verify_for(endpoints), timeout=tokens.timeout_s,
                                              trust_env=not endpoints.ca_bundle) as http:
            resp = await http.get(f"{endpoints.graph}/users/{quote(integ.account or '', safe='@')}",
                                  params=params, headers=headers)
            if resp.status_code == 200:
                return DirectoryRead(account_user=DirectoryUser.of(resp.json()))
            if resp.status_code == 404:  # not a UPN: its mail or a proxy address? Ask about who signed in
                resp = await http.get(f"{endpoints.graph}/users/{quote(oid, safe='')}", params=params,
                                      headers=headers)
                if resp.status_code == 200:
                    return DirectoryRead(signed_in_user=DirectoryUser.of(resp.json()))
    except Exception as exc:  # noqa: BLE001 - any failure only weakens the evidence, and says so
        big = graph_client.too_large(exc)
        return DirectoryRead(problem=f"reading Graph failed: {big}" if big else
                             f"reading Graph failed: {network_code(exc) or 'unclassified'}: {redact(exc)}")
    return DirectoryRead(problem=_graph_problem(resp, monitor_app))


def _graph_problem(resp: Any, monitor_app: str) -> str:
    code = graph_client.error_body(resp)[0] or ""
    if resp.status_code == 403:
        return f"the monitor app {monitor_app} lacks User.Read.All: Graph answered 403 {code}".rstrip()
    if resp.status_code == 404:
        return "Graph knows no user with the signed-in object id"
    return f"Graph answered {resp.status_code} {code}".rstrip()
