"""SASL XOAUTH2 and bearer-token checks shared by IMAP, POP3, SMTP and EWS, derived from the state
the way Exchange Online derives them (token, then protocol switches, then mailbox permissions)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

import jwt

from ..state import State
from ..tokens import Signer, sts_issuer
from .model import Mailbox, exchange_of, find_mailbox

EXCHANGE_AUDIENCES = ("https://outlook.office.com", "https://outlook.office365.com",
                      "00000002-0000-0ff1-ce00-000000000000")
DELEGATED_SCOPE = {"imap": "IMAP.AccessAsUser.All", "pop": "POP.AccessAsUser.All", "smtp": "SMTP.Send",
                   "ews": "EWS.AccessAsUser.All"}
APP_ROLE = {"imap": "IMAP.AccessAsApp", "pop": "POP.AccessAsApp", "smtp": "SMTP.SendAsApp",
            "ews": "full_access_as_app"}


@dataclass
class Principal:
    """Who a valid token speaks for."""
    tenant_id: str
    app_id: str
    upn: str | None  # delegated: the signed-in user (lower case); None for app-only
    roles: set[str] = field(default_factory=set)
    scopes: set[str] = field(default_factory=set)
    claims: dict = field(default_factory=dict)

    @property
    def app_only(self) -> bool:
        return self.upn is None

    @property
    def name(self) -> str:
        return self.upn or self.app_id

    def has_full_access(self, mb: Mailbox) -> bool:
        return (self.upn is not None and mb.owner == self.upn) or self.name in mb.full_access

    def may_send_as(self, mb: Mailbox | None, address: str, login: Mailbox | None) -> bool:
        """Own mailbox (delegated), the logged-in mailbox with full access (app-only), or SendAs."""
        if mb is None:
            return False
        if self.upn is not None and mb.owner == self.upn:
            return True
        if self.app_only and login is mb and self.name in mb.full_access:
            return True
        return self.name in mb.send_as


class TokenError(Exception):
    """kind: expired | not_yet_valid | signature | malformed | audience | issuer."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def verify_bearer(state: State, signer: Signer, token: str, audiences=EXCHANGE_AUDIENCES) -> Principal:
    try:
        claims = signer.verify(token)
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("expired", "The token has expired.") from exc
    except jwt.ImmatureSignatureError as exc:
        raise TokenError("not_yet_valid", "The token is not yet valid.") from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenError("signature", "The token has an invalid signature.") from exc
    except jwt.PyJWTError as exc:
        raise TokenError("malformed", "The token is malformed.") from exc
    if claims.get("aud") not in audiences:
        raise TokenError("audience", f"The audience claim value is invalid '{claims.get('aud')}'.")
    tenant = state.tenant(claims.get("tid", ""))
    if tenant is None or claims.get("iss") != sts_issuer(tenant.id):
        raise TokenError("issuer", "The token issuer is invalid.")
    delegated = claims.get("idtyp") == "user" or "scp" in claims
    upn = (claims.get("upn") or claims.get("preferred_username") or "").lower() if delegated else None
    return Principal(tenant_id=tenant.id, app_id=str(claims.get("appid") or claims.get("azp") or "").lower(),
                     upn=upn, roles=set(claims.get("roles") or []),
                     scopes=set((claims.get("scp") or "").split()), claims=claims)


def parse_xoauth2(blob_b64: str) -> tuple[str, str] | None:
    """`user=<addr>\\x01auth=Bearer <token>\\x01\\x01` (base64) -> (address, token), or None."""
    try:
        raw = base64.b64decode(blob_b64.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    parts = raw.split("\x01")
    fields = {}
    for p in parts:
        if "=" in p:
            k, _, v = p.partition("=")
            fields[k.strip().lower()] = v
    user, auth = fields.get("user", "").strip(), fields.get("auth", "")
    if not user or not auth.lower().startswith("bearer "):
        return None
    return user, auth[7:].strip()


@dataclass
class Login:
    ok: bool
    address: str = ""
    principal: Principal | None = None
    mailbox: Mailbox | None = None
    reason: str = ""  # why it failed, for logs and tests
    smtp_disabled: str | None = None  # "Tenant" | "Mailbox": SMTP AUTH is turned off
    not_connected: bool = False  # login accepted, the mailbox cannot be opened


def smtp_auth_off(state: State, mb: Mailbox) -> str | None:
    if mb.smtp_auth_enabled is False:
        return "Mailbox"
    if mb.smtp_auth_enabled is None and not exchange_of(state, mb.tenant_id).smtp_auth_enabled:
        return "Tenant"
    return None


def own_mailbox(state: State, principal: Principal, address: str) -> Mailbox | None:
    """The token's own user's mailbox when ``address`` names it (its primary address, UPN or a proxy address)."""
    mb = find_mailbox(state, address, principal.tenant_id)
    if mb is not None:
        return mb if mb.owner == principal.upn else None
    user = state.find_user_by_address(address, principal.tenant_id)
    if user is None or user.upn.lower() != principal.upn:
        return None
    return next((m for m in exchange_of(state, principal.tenant_id).mailboxes.values() if m.owner == principal.upn),
                None)


def check_login(state: State, signer: Signer, blob_b64: str, protocol: str) -> Login:
    """Exchange's decision for an XOAUTH2 login on imap | pop | smtp."""
    parsed = parse_xoauth2(blob_b64)
    if parsed is None:
        return Login(False, reason="malformed XOAUTH2 blob")
    address, token = parsed
    try:
        principal = verify_bearer(state, signer, token)
    except TokenError as exc:
        return Login(False, address, reason=f"token: {exc.kind}")
    with state.lock:
        if protocol == "smtp" and not principal.app_only:
            # SMTP with a delegated token authenticates as the token's own user only: user=<a shared mailbox>
            # is refused (535 5.7.3) even with FullAccess and SendAs; Send As is applied when the message is
            # submitted (M365_FACTS.md, "SASL XOAUTH2")
            mb = own_mailbox(state, principal, address)
            if mb is None:
                return Login(False, address, principal, find_mailbox(state, address, principal.tenant_id),
                             reason="SMTP: user= is not the token's own user")
        else:
            mb = find_mailbox(state, address, principal.tenant_id)
            if mb is None and not principal.app_only:
                mb = own_mailbox(state, principal, address)
        if mb is None:
            return Login(False, address, principal, reason="no such mailbox in the token's tenant")
        login = Login(False, address, principal, mb)
        if principal.app_only:
            if APP_ROLE[protocol] not in principal.roles:
                login.reason = f"role {APP_ROLE[protocol]} missing"
                return login
            if principal.app_id not in exchange_of(state, mb.tenant_id).service_principals:
                login.reason = "no Exchange service principal for the app (New-ServicePrincipal)"
                return login
        else:
            user = state.tenants[principal.tenant_id].users.get(principal.upn or "")
            if user is None or not user.enabled:
                login.reason = "the token's user does not exist or is disabled"
                return login
            if DELEGATED_SCOPE[protocol] not in principal.scopes:
                login.reason = f"scope {DELEGATED_SCOPE[protocol]} missing"
                return login
        if protocol == "smtp":
            off = smtp_auth_off(state, mb)
            if off:
                login.smtp_disabled, login.reason = off, f"SMTP AUTH disabled for the {off}"
                return login
            if principal.app_only and not (principal.has_full_access(mb) or principal.name in mb.send_as):
                login.reason = "no permission on the mailbox"
                return login
            login.ok = True
            return login
        if (protocol == "imap" and not mb.imap_enabled) or (protocol == "pop" and not mb.pop_enabled):
            login.reason = f"{protocol.upper()} disabled on the mailbox"
            return login
        access = principal.has_full_access(mb)
        if not access or mb.not_connected:
            # the login itself succeeds; opening the mailbox does not (IMAP: "authenticated but not connected")
            if protocol == "pop":
                login.reason = "not connected (POP opens the mailbox at login)"
                return login
            login.ok, login.not_connected = True, True
            login.reason = "no FullAccess" if not access else "mailbox not_connected"
            return login
        login.ok = True
        return login
