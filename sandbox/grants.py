"""Token endpoint logic: client authentication, scope resolution, user checks, the four grants.

Everything here is derived from `State`; failures raise `AADError` with Microsoft's code.
Callers hold `state.lock`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

import jwt

from . import tokens
from .errors import AADError
from .state import (
    EXCHANGE,
    EXCHANGE_APP_ID,
    GRAPH,
    GRAPH_APP_ID,
    INACTIVITY_LIMIT,
    App,
    RefreshToken,
    State,
    Tenant,
    User,
)

OIDC_SCOPES = {"openid", "profile", "offline_access", "email"}
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# (prefix, resource, audience of an app-only token for that identifier)
PREFIXES = [
    ("https://graph.microsoft.com/", GRAPH, "https://graph.microsoft.com"),
    (GRAPH_APP_ID + "/", GRAPH, "https://graph.microsoft.com"),
    ("https://outlook.office365.com/", EXCHANGE, "https://outlook.office365.com"),
    ("https://outlook.office.com/", EXCHANGE, "https://outlook.office.com"),
    (EXCHANGE_APP_ID + "/", EXCHANGE, EXCHANGE_APP_ID),
]
DELEGATED_AUD = {GRAPH: "https://graph.microsoft.com", EXCHANGE: "https://outlook.office.com"}
RESOURCE_URI = {GRAPH: "https://graph.microsoft.com", EXCHANGE: "https://outlook.office.com"}
SKEW = dt.timedelta(minutes=5)


@dataclass
class ScopeRequest:
    raw: list[str]
    resource: str = GRAPH
    app_aud: str = "https://graph.microsoft.com"
    perms: set[str] = field(default_factory=set)
    default: bool = False
    oidc: set[str] = field(default_factory=set)


def parse_scopes(raw: str | list[str] | None, tenant: Tenant) -> ScopeRequest:
    items = raw.split() if isinstance(raw, str) else list(raw or [])
    req = ScopeRequest(raw=items)
    seen: set[str] = set()
    for s in items:
        if s.lower() in OIDC_SCOPES:
            req.oidc.add(s.lower())
            continue
        match = next(((r, a, s[len(p):]) for p, r, a in PREFIXES if s.lower().startswith(p.lower())), None)
        if match is None:
            if "/" in s:  # an identifier URI of a resource this directory does not have
                raise AADError(500011, resource=s.rsplit("/", 1)[0], tenant=tenant.id)
            match = (GRAPH, "https://graph.microsoft.com", s)
        res, aud, name = match
        if res == EXCHANGE and not tenant.exchange_online:
            # no Office 365 Exchange Online service principal in the tenant (no Exchange licence, or removed)
            raise AADError(500011, resource=s.rsplit("/", 1)[0] if "/" in s else "00000002-0000-0ff1-ce00-000000000000",
                           tenant=tenant.id)
        if seen and res not in seen:
            raise AADError(28000, scope=" ".join(items))
        seen.add(res)
        req.resource, req.app_aud = res, aud
        if name == ".default":
            req.default = True
        elif name:
            req.perms.add(name)
    return req


# -- client authentication ---------------------------------------------------------------------------

def authenticate_client(state: State, tenant: Tenant, app: App, form: dict, basic: tuple | None,
                        token_urls: set[str], allow_public: bool, ctx=None) -> str:
    """Returns `appidacr`: '0' public client, '1' secret, '2' certificate. `ctx` (a logs.SignInContext) learns
    which credential the client presented, as the sign-in logs record it."""
    secret = form.get("client_secret") or (basic[1] if basic else None)
    assertion = form.get("client_assertion")
    if secret:
        check_secret(state, app, secret, ctx)
        return "1"
    if assertion:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise AADError(900144, param="client_assertion_type")
        check_assertion(state, app, assertion, token_urls, ctx)
        return "2"
    if allow_public and app.public_client:
        return "0"
    raise AADError(7000218)


def check_secret(state: State, app: App, value: str, ctx=None) -> None:
    now = state.now()
    matching = [s for s in app.secrets if hmac.compare_digest(s.value.encode(), value.encode())
                and (s.usable_from is None or s.usable_from <= now)]  # a new secret still replicating: unknown
    if not matching:
        raise AADError(7000215, app_id=app.app_id)
    if ctx is not None:
        ctx.credential = matching[0]
    good = next((s for s in matching if s.start - SKEW <= now < s.end), None)
    if good is not None:
        if ctx is not None:
            ctx.credential = good
        return
    if any(s.end <= now for s in matching):
        raise AADError(7000222, app_id=app.app_id)
    raise AADError(7000215, app_id=app.app_id)  # not yet valid


def _thumb(header: dict) -> tuple[str, str]:
    for name, attr in (("x5t#S256", "thumbprint_sha256"), ("x5t", "thumbprint")):
        if header.get(name):
            raw = header[name] + "=" * (-len(header[name]) % 4)
            try:
                return attr, base64.urlsafe_b64decode(raw).hex().upper()
            except ValueError:
                return attr, header[name]
    return "thumbprint", ""


def check_assertion(state: State, app: App, assertion: str, token_urls: set[str], ctx=None) -> None:
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError as exc:
        raise AADError(50012, reason=f"Client assertion is not a valid JWT. ({exc})") from exc
    attr, thumb = _thumb(header)
    tail = (f"Thumbprint of key used by client: '{thumb}', Please visit the Azure Portal, Graph Explorer "
            f"or directly use MS Graph to see configured keys for app Id '{app.app_id}'.")
    cert = next((c for c in app.certificates if getattr(c, attr) == thumb), None)
    if cert is None:
        raise AADError(700027, reason="The certificate with identifier used to sign the client assertion "
                       f"is not registered on application. [Reason - The key was not found., {tail}]")
    if ctx is not None:
        ctx.credential = cert
    now = state.now()
    if now >= cert.end or now < cert.start - SKEW:
        raise AADError(700027, reason="Client assertion contains an invalid signature. [Reason - The key "
                       f"used is expired., {tail} Found key 'Start={cert.start:%m/%d/%Y %H:%M:%S}, "
                       f"End={cert.end:%m/%d/%Y %H:%M:%S}']")
    try:
        claims = jwt.decode(assertion, cert.cert.public_key(), algorithms=["RS256", "PS256"],
                            options={"verify_exp": False, "verify_nbf": False, "verify_aud": False,
                                     "verify_iat": False})
    except jwt.InvalidSignatureError as exc:
        raise AADError(700027, reason="Client assertion failed signature validation. [Reason - The provided "
                       f"signature value did not match the expected signature value., {tail}]") from exc
    except jwt.PyJWTError as exc:
        raise AADError(50012, reason=f"Client assertion is not a valid JWT. ({exc})") from exc
    if claims.get("iss") != app.app_id or claims.get("sub") != app.app_id:
        raise AADError(700021)
    aud = claims.get("aud")
    auds = set(aud) if isinstance(aud, list) else {aud}
    if not auds & token_urls:
        raise AADError(50012, reason="Client assertion audience claim does not match Realm issuer. Review "
                       "the documentation at https://learn.microsoft.com/entra/identity-platform/"
                       "certificate-credentials .")
    ts = now.timestamp()
    exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
    if exp is None or ts > exp + SKEW.total_seconds() or (nbf is not None and ts < nbf - SKEW.total_seconds()):
        fmt = "%m/%d/%Y %H:%M:%S"
        def show(v):
            return dt.datetime.fromtimestamp(v, dt.UTC).strftime(fmt) if v else "(none)"
        raise AADError(700024, now=now.strftime(fmt), nbf=show(nbf), exp=show(exp))


# -- user checks -----------------------------------------------------------------------------------

def check_user(state: State, app: App, user: User, req: ScopeRequest, mfa: bool,
               auth_time: dt.datetime | None, frequency: bool, interactive: bool = False) -> None:
    """The user-state checks Entra makes on every user token (interactive or redeemed). An expired password
    stops an interactive sign-in only: expiry revokes no refresh token (M365_FACTS.md)."""
    if not user.enabled:
        raise AADError(50057)
    if user.locked:
        raise AADError(50053)
    if interactive and user.password_expired:
        raise AADError(50055)
    if user.blocked_by_security_defaults:
        raise AADError(530035)
    if app.assignment_required and user.upn.lower() not in app.assigned_users:
        raise AADError(50105, app_name=app.display_name, app_id=app.app_id, upn=user.upn)
    if user.ca_blocked:
        raise AADError(53003)
    if frequency and user.signin_frequency_hours is not None and auth_time is not None:
        max_age = dt.timedelta(hours=float(user.signin_frequency_hours))
        if state.now() - auth_time > max_age:
            raise AADError(70043, issued=auth_time.strftime("%m/%d/%Y %H:%M:%S"), max_age=str(max_age))
    resource = RESOURCE_URI[req.resource]
    if user.mfa == "enrollment_required":
        raise AADError(50079, resource=resource)
    if user.mfa == "not_passed":
        raise AADError(50074)
    if user.mfa == "required" and not mfa:
        raise AADError(50076, resource=resource)
    if (frequency and user.mfa == "required" and mfa and auth_time is not None
            and user.mfa_max_age_hours is not None
            and state.now() - auth_time > dt.timedelta(hours=float(user.mfa_max_age_hours))):
        raise AADError(50078, resource=resource)


def missing_consent(app: App, user: User, req: ScopeRequest) -> set[str]:
    return req.perms - app.consented_scopes(user.upn, req.resource)


def grant_user_consent(app: App, user: User, req: ScopeRequest) -> None:
    grants = app.user_grants.setdefault(user.upn.lower(), {})
    grants.setdefault(req.resource, set()).update(req.perms)


# -- issuing ---------------------------------------------------------------------------------------

@dataclass
class Issuer:
    state: State
    signer: tokens.Signer
    base_url: str

    def app_only(self, app: App, req: ScopeRequest, acr: str) -> dict:
        if not req.default or req.perms or not req.raw:
            bad = " ".join(req.raw) or "(none)"
            raise AADError(1002012, scope=bad)
        roles = sorted(app.app_permissions.get(req.resource, set()))
        at = tokens.app_token(self.signer, self.state, app, req.app_aud, roles, acr)
        life = self.state.token_lifetime_s
        return {"token_type": "Bearer", "expires_in": life, "ext_expires_in": life, "access_token": at}

    def for_user(self, tenant: Tenant, app: App, user: User, req: ScopeRequest, acr: str, mfa: bool,
                 auth_time: dt.datetime, nonce: str | None = None, family: str | None = None,
                 public: bool | None = None) -> dict:
        consented = app.consented_scopes(user.upn, req.resource)
        scp = sorted(consented)  # Entra puts every consented scope of the resource in `scp`
        aud = DELEGATED_AUD[req.resource]
        at = tokens.user_token(self.signer, self.state, app, user, aud, scp, acr, mfa, auth_time)
        life = self.state.token_lifetime_s
        shown = [s if req.resource == GRAPH else f"{RESOURCE_URI[req.resource]}/{s}" for s in scp]
        shown += sorted(req.oidc)
        body = {"token_type": "Bearer", "scope": " ".join(shown), "expires_in": life,
                "ext_expires_in": life, "access_token": at}
        if "offline_access" in req.oidc:
            now = self.state.now()
            rt = RefreshToken(token="1.Asandbox" + secrets.token_urlsafe(48), tenant_id=tenant.id,
                              client_id=app.app_id, upn=user.upn.lower(), scopes=list(req.raw),
                              auth_time=auth_time, issued_at=now, mfa=mfa,
                              public=(acr == "0") if public is None else public)
            if family:
                rt.family = family
            self.state.refresh_tokens[rt.token] = rt
            body["refresh_token"] = rt.token
        if "openid" in req.oidc:
            body["id_token"] = tokens.id_token(self.signer, self.state, self.base_url, app, user, nonce, auth_time)
        body["client_info"] = tokens.client_info(user)
        return body


def redeem_refresh_token(state: State, issuer: Issuer, tenant: Tenant, app: App, form: dict, acr: str) -> dict:
    rt = state.refresh_tokens.get(form.get("refresh_token") or "")
    if rt is None:
        raise AADError(9002313)
    if rt.client_id != app.app_id or rt.tenant_id != tenant.id:
        raise AADError(70000)
    if rt.public and acr != "0":
        # a refresh token from a public-client flow (device code) is redeemed without a client credential
        raise AADError(700025)
    now = state.now()
    if rt.expires_at is not None and now >= rt.expires_at:
        raise AADError(70008)
    if now - rt.issued_at >= INACTIVITY_LIMIT:
        inactive = now - rt.issued_at
        raise AADError(700082, issued=rt.issued_at.strftime("%m/%d/%Y %H:%M:%S"),
                       inactive=f"{inactive.days}.{inactive.seconds // 3600:02d}:00:00")
    user = tenant.users.get(rt.upn)
    if user is None:
        raise AADError(50034, upn=rt.upn, tenant=tenant.domain)
    valid_from = user.tokens_valid_from
    if rt.password_based and user.password_changed_at is not None and (
            valid_from is None or user.password_changed_at > valid_from):
        valid_from = user.password_changed_at  # an admin reset or a change of the password
    if valid_from is not None and rt.auth_time < valid_from:
        raise AADError(50173, issued=rt.auth_time.strftime("%m/%d/%Y %H:%M:%S"),
                       valid_from=valid_from.strftime("%m/%d/%Y %H:%M:%S"))
    req = parse_scopes(form.get("scope") or rt.scopes, tenant)
    check_user(state, app, user, req, rt.mfa, rt.auth_time, frequency=True)
    if missing_consent(app, user, req):
        raise AADError(65001, app_id=app.app_id, app_name=app.display_name)
    return issuer.for_user(tenant, app, user, req, acr, rt.mfa, rt.auth_time, family=rt.family, public=rt.public)


def pkce_ok(verifier: str | None, challenge: str | None, method: str | None) -> bool:
    if not challenge:
        return True
    if not verifier:
        return False
    if (method or "plain").upper() == "S256":
        digest = tokens.b64url(hashlib.sha256(verifier.encode()).digest())
        return hmac.compare_digest(digest, challenge)
    return hmac.compare_digest(verifier, challenge)


def redeem_auth_code(state: State, issuer: Issuer, tenant: Tenant, app: App, form: dict, acr: str) -> dict:
    code = state.auth_codes.get(form.get("code") or "")
    if code is None or code.client_id != app.app_id or code.tenant_id != tenant.id:
        raise AADError(70000)
    if code.redeemed:
        raise AADError(54005)
    if state.now() >= code.expires_at:
        raise AADError(70008)
    if form.get("redirect_uri") != code.redirect_uri:
        raise AADError(500112, redirect_uri=form.get("redirect_uri") or "", expected=code.redirect_uri)
    if not pkce_ok(form.get("code_verifier"), code.code_challenge, code.code_challenge_method):
        raise AADError(501481)
    code.redeemed = True
    user = tenant.users.get(code.upn)
    if user is None:
        raise AADError(50034, upn=code.upn, tenant=tenant.domain)
    req = parse_scopes(code.scopes, tenant)
    check_user(state, app, user, req, code.mfa, code.auth_time, frequency=False)
    if missing_consent(app, user, req):
        raise AADError(65001, app_id=app.app_id, app_name=app.display_name)
    return issuer.for_user(tenant, app, user, req, acr, code.mfa, code.auth_time, nonce=code.nonce)


def redeem_device_code(state: State, issuer: Issuer, tenant: Tenant, app: App, form: dict, acr: str) -> dict:
    dc = state.device_codes.get(form.get("device_code") or form.get("code") or "")
    if dc is None or dc.client_id != app.app_id or dc.tenant_id != tenant.id:
        raise AADError(70000)
    if dc.redeemed:
        raise AADError(54005)
    if state.now() >= dc.expires_at:
        raise AADError(70019)
    if dc.approved_upn is None:
        raise AADError(70016)
    user = tenant.users.get(dc.approved_upn)
    if user is None:
        raise AADError(50034, upn=dc.approved_upn, tenant=tenant.domain)
    req = parse_scopes(dc.scopes, tenant)
    dc.redeemed = True
    check_user(state, app, user, req, dc.mfa, dc.auth_time, frequency=False)
    if missing_consent(app, user, req):
        raise AADError(65001 if tenant.user_consent else 90094, app_id=app.app_id, app_name=app.display_name)
    return issuer.for_user(tenant, app, user, req, acr, dc.mfa, dc.auth_time or state.now())


def approve_device(state: State, tenant: Tenant, app: App, dc, user: User, mfa: bool) -> None:
    """The user finished /devicelogin (or the control API did it for them)."""
    dc.approved_upn = user.upn.lower()
    dc.auth_time = state.now()
    dc.mfa = mfa
    req = parse_scopes(dc.scopes, tenant)
    missing = missing_consent(app, user, req)
    if tenant.user_consent and missing:
        grant_user_consent(app, user, req)
        from . import audit

        audit.consent(state, app, req.resource, sorted(missing), user.upn, admin=False, app_only=False, upn=user.upn)
