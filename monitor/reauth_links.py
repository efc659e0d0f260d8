"""The signed links of reauthorisation requests: ``<base_url>/reauth/<id>.<expiry>.<mac>``.

The mac is an HMAC-SHA256 of the request's id, expiry and random nonce under a key derived from the token
key. The database holds the nonce, never the link: neither a copy of the database nor a guess gives a
working link, while mailwarden can show the same link again in every reminder and on the dashboard. A link
works while its request is open and unexpired; the request closes when a sign-in succeeds, so the link is
single-use (a refused or cancelled sign-in leaves it usable, to try again).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime
from typing import Any

PURPOSE = "reauth-link-v1"


def _mac(key: bytes, request_id: int, expires: int, nonce: str) -> str:
    digest = hmac.new(key, f"{request_id}.{expires}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def link_key(cipher: Any) -> bytes:
    return cipher.derive(PURPOSE)


def token_for(key: bytes, req: Any) -> str:
    expires = int(req.expires_at.timestamp())
    return f"{req.id}.{expires}.{_mac(key, req.id, expires, req.nonce)}"


def url_for(base_url: str, key: bytes, req: Any) -> str:
    return f"{base_url.rstrip('/')}/reauth/{token_for(key, req)}"


_SHAPE = re.compile(r"[0-9]{1,12}", re.ASCII)  # an id, and an expiry in Unix seconds: ASCII digits, bounded


def parse(token: str) -> tuple[int, int] | None:
    """(request id, expiry) from the token's shape, or None; says nothing about validity."""
    parts = token.split(".")
    if len(parts) != 3 or not all(_SHAPE.fullmatch(p) for p in parts[:2]):
        return None
    return int(parts[0]), int(parts[1])


def verify(key: bytes, token: str, req: Any) -> bool:
    """The token is this request's link (same id, expiry and nonce under our key)."""
    return req is not None and hmac.compare_digest(token.encode(), token_for(key, req).encode())


def expired(req: Any, now: datetime | None = None) -> bool:
    return req.expires_at <= (now or datetime.now(UTC))


def open_urls(config: Any, store: Any, cipher: Any, now: datetime | None = None) -> dict[str, str]:
    """Integration name -> link of its open, unexpired request (what alerts put in the link slot)."""
    now = now or datetime.now(UTC)
    key = link_key(cipher)
    return {r.integration: url_for(config.web.base_url, key, r) for r in store.reauth.open_reauth_requests()
            if not expired(r, now)}


def for_runtime(runtime: Any):
    """What ``monitor.alerting.make_dispatcher(..., reauth_urls=...)`` takes, for a runtime."""
    return lambda: open_urls(runtime.config, runtime.store, runtime.cipher)
