"""Who may use the web app: an admin password (scrypt hash in the config), a trusted reverse proxy that
names the user in a header, or nobody checked at all when the config says ``web.auth: none``.

Pages send a visitor without a session to ``/login``; ``/api`` and ``/metrics`` answer 401 and also
take HTTP Basic with the admin's credentials on GET (for scripts and Prometheus). Basic is refused on
POST: a browser replays cached Basic credentials cross-site, so actions need the session and its CSRF
token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from starlette.requests import Request

from mailwarden.errors import ConfigError
from mailwarden.monitor.config import WebConfig, resolve_ref

SCHEME = "scrypt"
_N, _R, _P = 2**15, 8, 1
_MAXMEM = 64 * 1024 * 1024


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    """``scrypt$N$r$p$salt$hash``: what ``web.password_hash`` holds."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=32)
    return f"{SCHEME}${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != SCHEME:
            return False
        got = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=_MAXMEM, dklen=len(_unb64(digest)))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(got, _unb64(digest))


def load_password_hash(web: WebConfig, base_dir: Path) -> str | None:
    """The configured hash (inline, or behind env:/file:), checked for shape so a typo fails at start."""
    value = web.password_hash
    if value is None:
        return None
    if value.startswith(("env:", "file:")):
        value = resolve_ref(value, base_dir, what="web.password_hash")
    parts = value.split("$")
    if len(parts) != 6 or parts[0] != SCHEME or not all(parts[1:4]) or not parts[1].isdigit():
        raise ConfigError("web.password_hash is not a hash made by `mailwarden web hash-password`",
                          hint="Run `mailwarden web hash-password` and paste its output")
    return value


def session_key(web: WebConfig, base_dir: Path) -> str:
    if web.session_key:
        return resolve_ref(web.session_key, base_dir, what="web.session_key")
    return secrets.token_urlsafe(32)  # sessions end when the process restarts


def safe_next(target: str | None) -> str:
    """Only a path on this site: no scheme, no host, no ``//host`` or ``/\\host`` (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(c in target for c in "\r\n\t\\"):
        return "/"
    return target


def login_url(request: Request) -> str:
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/login?next=" + quote(safe_next(path), safe="")


@dataclass
class Access:
    mode: str  # password | proxy | none
    user: str = "admin"
    password_hash: str | None = None
    proxy_header: str | None = None
    trusted_proxies: tuple[str, ...] = ()

    def user_of(self, request: Request, *, basic_ok: bool) -> str | None:
        """The signed-in user, or None."""
        if self.mode == "none":
            return "anonymous"
        if self.mode == "proxy":
            client = request.client.host if request.client else ""
            name = request.headers.get(self.proxy_header or "") if client in self.trusted_proxies else None
            return name.strip() or None if name else None
        user = request.session.get("user")
        if user:
            return str(user)
        if basic_ok:
            return self._basic(request.headers.get("authorization", ""))
        return None

    def _basic(self, header: str) -> str | None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not value:
            return None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        return user if self.check(user, password) else None

    def check(self, user: str, password: str) -> bool:
        if self.password_hash is None:
            return False
        ok_user = hmac.compare_digest(user.encode(), self.user.encode())
        return verify_password(password, self.password_hash) and ok_user


def access_from(web: WebConfig, base_dir: Path) -> Access:
    mode = web.auth_mode()
    if mode is None:
        raise ConfigError("the web app needs an access rule: set web.password_hash (from `mailwarden web "
                          "hash-password`), or web.auth: proxy with web.proxy_header, or web.auth: none",
                          hint="web.auth: none only behind something else that checks who may come in")
    return Access(mode=mode, user=web.admin_user, password_hash=load_password_hash(web, base_dir),
                  proxy_header=web.proxy_header, trusted_proxies=tuple(web.trusted_proxies))
