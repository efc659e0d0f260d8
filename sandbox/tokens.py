"""The token signing key (JWKS) and the shapes of access tokens, ID tokens and client_info."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization

from . import tls
from .state import EXCHANGE, GRAPH, App, State, User


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class Signer:
    """One RS256 key, published in the JWKS with `kid` = `x5t` as Entra does."""

    def __init__(self, workdir: Path):
        self.key = tls.new_rsa_key()
        now = dt.datetime.now(dt.UTC)
        self.cert = tls.self_signed(self.key, "accounts.sandbox.mailwarden", now - dt.timedelta(days=1),
                                    now + dt.timedelta(days=365))
        der = self.cert.public_bytes(serialization.Encoding.DER)
        self.kid = b64url(hashlib.sha1(der).digest())  # noqa: S324 - x5t is SHA-1 by definition
        self.x5c = base64.b64encode(der).decode()
        self.public_pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        folder = workdir / "signing"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{self.kid}.pub.pem").write_bytes(self.public_pem)

    def jwks(self, issuer: str) -> dict:
        pub = self.key.public_key().public_numbers()
        return {"keys": [{
            "kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.kid, "n": _int_b64(pub.n),
            "e": _int_b64(pub.e), "x5c": [self.x5c], "issuer": issuer,
        }]}

    def sign(self, claims: dict) -> str:
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid, "x5t": self.kid})

    def verify(self, token: str) -> dict:
        """Signature and lifetime; raises jwt exceptions. Audience is checked by the caller."""
        return jwt.decode(token, self.key.public_key(), algorithms=["RS256"],
                          options={"verify_aud": False, "require": ["exp", "iat"]}, leeway=0)


def sts_issuer(tenant_id: str) -> str:
    return f"https://sts.windows.net/{tenant_id}/"


def _times(state: State) -> tuple[int, int, int]:
    now = int(state.now().timestamp())
    return now, now - 300, now + state.token_lifetime_s


def app_token(signer: Signer, state: State, app: App, aud: str, roles: list[str], acr: str) -> str:
    iat, nbf, exp = _times(state)
    claims = {
        "aud": aud, "iss": sts_issuer(app.tenant_id), "iat": iat, "nbf": nbf, "exp": exp,
        "aio": b64url(uuid.uuid4().bytes), "app_displayname": app.display_name, "appid": app.app_id,
        "appidacr": acr, "azp": app.app_id, "azpacr": acr,
        "idp": sts_issuer(app.tenant_id), "idtyp": "app", "oid": app.sp_object_id,
        "rh": "0.sandbox.", "sub": app.sp_object_id, "tid": app.tenant_id,
        "uti": b64url(uuid.uuid4().bytes), "ver": "1.0", "xms_tcdt": int(state.started_at.timestamp()),
    }
    if roles:  # Entra omits the claim when the app holds no role on the resource
        claims["roles"] = sorted(roles)
    return signer.sign(claims)


def user_token(signer: Signer, state: State, app: App, user: User, aud: str, scopes: list[str],
               acr: str, mfa: bool, auth_time: dt.datetime) -> str:
    iat, nbf, exp = _times(state)
    scp = " ".join(sorted(scopes))
    name = user.display_name or user.upn
    claims = {
        "aud": aud, "iss": sts_issuer(app.tenant_id), "iat": iat, "nbf": nbf, "exp": exp,
        "acct": 0, "acr": "1", "aio": b64url(uuid.uuid4().bytes),
        "amr": ["pwd", "mfa"] if mfa else ["pwd"], "app_displayname": app.display_name,
        "appid": app.app_id, "appidacr": acr, "azp": app.app_id, "azpacr": acr,
        "auth_time": int(auth_time.timestamp()), "idtyp": "user", "ipaddr": "127.0.0.1",
        "name": name, "oid": user.oid, "puid": user.oid.replace("-", "")[:16].upper(),
        "rh": "0.sandbox.", "scp": scp, "scope": scp, "sid": str(uuid.uuid4()), "sub": b64url(
            hashlib.sha256(f"{user.oid}:{app.app_id}".encode()).digest()),
        "tid": app.tenant_id, "unique_name": user.upn, "upn": user.upn, "preferred_username": user.upn,
        "uti": b64url(uuid.uuid4().bytes), "ver": "1.0", "xms_tcdt": int(state.started_at.timestamp()),
    }
    if user.groups:  # Entra sends up to 200 group ids in a JWT, then an overage claim instead
        claims["groups"] = [str(uuid.uuid5(uuid.NAMESPACE_OID, f"{user.oid}:{i}"))
                            for i in range(min(user.groups, 200))]
    return signer.sign(claims)


def id_token(signer: Signer, state: State, base_url: str, app: App, user: User, nonce: str | None,
             auth_time: dt.datetime) -> str:
    iat, nbf, exp = _times(state)
    claims = {
        "aud": app.app_id, "iss": f"{base_url}/{app.tenant_id}/v2.0", "iat": iat, "nbf": nbf, "exp": exp,
        "auth_time": int(auth_time.timestamp()), "name": user.display_name or user.upn, "oid": user.oid,
        "preferred_username": user.upn, "email": user.address, "rh": "0.sandbox.",
        "sub": b64url(hashlib.sha256(f"{user.oid}:{app.app_id}:id".encode()).digest()),
        "tid": app.tenant_id, "uti": b64url(uuid.uuid4().bytes), "ver": "2.0",
    }
    if nonce:
        claims["nonce"] = nonce
    return signer.sign(claims)


def client_info(user: User) -> str:
    return b64url(json.dumps({"uid": user.oid, "utid": user.tenant_id}).encode())


GRAPH_AUDIENCES = ("https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000")
RESOURCE_OF_AUDIENCE = {
    "https://graph.microsoft.com": GRAPH, "00000003-0000-0000-c000-000000000000": GRAPH,
    "https://outlook.office365.com": EXCHANGE, "https://outlook.office.com": EXCHANGE,
    "00000002-0000-0ff1-ce00-000000000000": EXCHANGE,
}
