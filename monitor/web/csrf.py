"""CSRF protection: a per-session token in every form, compared on every POST; plus an Origin check.

Every POST handler is wrapped with ``protected``: it parses the form body (urlencoded; no multipart is
ever posted) and refuses the request with 403 unless the token matches the session's. The session
cookie is SameSite=Lax as a second line.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

FIELD = "csrf_token"
HEADER = "x-csrf-token"
MAX_BODY = 64 * 1024


def token(request: Request) -> str:
    tok = request.session.get("csrf")
    if not tok:
        tok = request.session["csrf"] = secrets.token_urlsafe(24)
    return tok


async def read_form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(413, "form too large")
    try:
        parsed = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "malformed form") from None
    return {k: v[0] for k, v in parsed.items()}


def _same_origin(request: Request, base_url: str) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None  # "null" (sandboxed frame, file://) is never ours
    mine = {urlsplit(base_url).netloc, request.headers.get("host", "")}
    return urlsplit(origin).netloc in mine


def protected(handler: Callable[[Request, dict[str, str]], Awaitable[Response]]):
    """Wrap a POST handler: refuse without a matching CSRF token or from another origin."""

    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        form = await read_form(request)
        expected = request.session.get("csrf")
        given = form.get(FIELD) or request.headers.get(HEADER) or ""
        if not expected or not hmac.compare_digest(str(expected), given):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
        if not _same_origin(request, request.app.state.web.base_url):
            raise HTTPException(403, "cross-origin request refused")
        return await handler(request, form)

    wrapper.csrf_protected = True  # type: ignore[attr-defined]
    return wrapper
