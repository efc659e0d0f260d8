"""CSRF protection: a per-session token in every form, compared on every POST; an Origin check against the
Host allow-list; and the allow-list itself (against DNS rebinding).

Every POST handler is wrapped with ``protected``: it parses the form body (urlencoded; no multipart is
ever posted; at most ``MAX_BODY`` bytes, counted while reading) and refuses the request with 403 unless the
token matches the session's and the Origin, when sent, is one of this app's hosts. The session cookie is
SameSite=Lax as a second line.

The Host allow-list (``allowed_hosts``) is ``web.base_url``'s host, the host of ``web.listen`` (unless it is a
wildcard address), loopback, and ``web.allowed_hosts``. A page that rebinds its own name to this server's
address sends its own name as Host and Origin: ``monitor.web.app`` refuses such a Host (400) on every path but
``/healthz``, and this module refuses such an Origin.
"""

from __future__ import annotations

import base64
import functools
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import parse_qs, urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from mailwarden.monitor.config import WebConfig

FIELD = "csrf_token"
HEADER = "x-csrf-token"
MAX_BODY = 64 * 1024
MAX_FIELDS = 50
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def token(request: Request) -> str:
    """The token a page carries: the session's secret under a fresh random mask, so that no two answers hold the same
    bytes (pages are compressed and echo what the address asked for: a fixed secret beside reflected text is what a
    BREACH-style attack reads back from compressed sizes)."""
    tok = request.session.get("csrf")
    if not tok:
        tok = request.session["csrf"] = secrets.token_urlsafe(24)
    raw = tok.encode()
    mask = secrets.token_bytes(len(raw))
    return base64.urlsafe_b64encode(mask + bytes(a ^ b for a, b in zip(mask, raw, strict=True))).decode().rstrip("=")


def _unmasked(given: str) -> bytes:
    """The secret a masked token carries (b"" when it is not one)."""
    try:
        blob = base64.urlsafe_b64decode(given + "=" * (-len(given) % 4))
    except (ValueError, TypeError):
        return b""
    half = len(blob) // 2
    if not blob or len(blob) % 2:
        return b""
    return bytes(a ^ b for a, b in zip(blob[:half], blob[half:], strict=True))


def matches(expected: str | None, given: str) -> bool:
    """Whether ``given`` (a page's masked token, or the session's secret itself) is the session's token."""
    if not expected:
        return False
    want = str(expected).encode()
    return hmac.compare_digest(want, _unmasked(given)) or hmac.compare_digest(want, given.encode("utf-8", "replace"))


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded body as a dict (first value of each field); 413 past ``MAX_BODY`` (counted while reading,
    so a larger body is never held), 400 when it is not a form."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise HTTPException(413, "form too large")
        chunks.append(chunk)
    try:
        parsed = parse_qs(b"".join(chunks).decode(), keep_blank_values=True, max_num_fields=MAX_FIELDS,
                          strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "malformed form") from None
    return {k: v[0] for k, v in parsed.items()}


def _bracketed(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    try:
        if isinstance(ipaddress.ip_address(host.strip("[]")), ipaddress.IPv6Address):
            return f"[{host.strip('[]')}]"
    except ValueError:
        pass
    return host


def allowed_hosts(web: WebConfig) -> list[str]:
    """The hosts (no ports; IPv6 in brackets; ``*.example.com`` patterns) this app answers to."""
    hosts = [_bracketed(urlsplit(web.base_url).hostname or "")]
    listen, _ = web.host_port()
    try:
        wildcard = ipaddress.ip_address(listen).is_unspecified
    except ValueError:
        wildcard = False
    if listen and not wildcard:
        hosts.append(_bracketed(listen))
    hosts += [*LOOPBACK, *(_bracketed(h) for h in web.allowed_hosts)]
    return list(dict.fromkeys(h for h in hosts if h))


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """``host`` (no port; IPv6 in brackets) is in the allow-list, patterns included."""
    host = _bracketed(host)
    return any(host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in allowed)


def origin_allowed(origin: str | None, allowed: Iterable[str]) -> bool:
    """No Origin (an older browser, a script) passes: the token still has to match. ``null`` (a sandboxed frame,
    file://) never does; otherwise an http(s) origin whose host is on the allow-list."""
    if origin is None:
        return True
    try:
        parts = urlsplit(origin)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(host) and host_allowed(host or "", allowed)


def protected(handler: Callable[[Request, dict[str, str]], Awaitable[Response]]):
    """Wrap a POST handler: refuse without a matching CSRF token or from another origin."""

    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        form = await read_form(request)
        expected = request.session.get("csrf")
        given = form.get(FIELD) or request.headers.get(HEADER) or ""
        if not matches(expected, given):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
        allowed = getattr(request.app.state, "allowed_hosts", None) or allowed_hosts(request.app.state.web.web)
        if not origin_allowed(request.headers.get("origin"), allowed):
            raise HTTPException(403, "cross-origin request refused")
        return await handler(request, form)

    wrapper.csrf_protected = True  # type: ignore[attr-defined]
    return wrapper
