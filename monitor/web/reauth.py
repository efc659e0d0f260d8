"""Reauthorisation in the browser: the signed link of an alert, the sign-in as exactly the right user, and
the proof that it worked.

``GET /reauth/<token>`` says which account must sign in and why; its button (a POST with the CSRF token)
starts MSAL's auth code flow with PKCE, state, nonce, ``login_hint`` = the configured account and
``prompt=select_account``. The flow dict stays on the server (encrypted in the attempt's audit row); the
session cookie only names the attempt, binding the callback to the browser that started it.
``GET /auth/callback`` claims that flow once (a replayed or forged state finds nothing), completes it
through ``monitor.reauth.complete`` (identity and scope checks, storing the token), closes the request,
runs the integration's checks through the running runner and shows their results.

These routes need no admin login: the signed, single-use, expiring link is the credential. They are
rate-limited per client address (behind a proxy in ``web.trusted_proxies``, the address it names in
X-Forwarded-For; an IPv6 client by its /64), the link pages and the callback each with their own limit, in
tables that a flood of new addresses cannot clear (``monitor.web.throttle``). They show nothing beyond the
integration's name and account until a sign-in has been started with a valid link.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from mailwarden.checks import diagnoses
from mailwarden.errors import MailwardenError
from mailwarden.monitor import reauth as flows
from mailwarden.monitor import reauth_links as links
from mailwarden.monitor.signins import open_reauth_window
from mailwarden.monitor.web import csrf
from mailwarden.monitor.web.pages import render
from mailwarden.monitor.web.throttle import CAPACITY, Throttle, client_key, retry_header
from mailwarden.redact import redact

log = logging.getLogger("mailwarden.web.reauth")
SESSION_KEY = "reauth_attempt"
CALLBACK = "/auth/callback"
LIMIT, WINDOW_S = 30, 300.0  # requests per client to the link pages (GET and POST /reauth/<token>)
CALLBACK_LIMIT = 10  # requests per client to the callback, per WINDOW_S (one per sign-in)

# The step inside the consuming system, as the seeds' guides describe it (mailwarden's token is its own).
SYSTEM_STEPS = {
    "house-on-the-hill": "In House-on-the-Hill, in a private (InPrivate/Incognito) window signed in as a "
                         "Supervisor: Settings cog > More Tools > OAuth Scripts > the oauth: script > Auth, sign in "
                         "at Microsoft as {account}, then OK the script. If Auth fails, sign out of Microsoft in "
                         "another tab and click Auth again.",
    "oracle b2c": "In Oracle B2C Service: open the mailbox editor > the mailbox > Authenticate and sign in as "
                  "{account} (you may have to click Authenticate twice: once with an Office 365 admin account, "
                  "then with the mailbox account), then scroll down and click OK. A green 'Authenticated' alone "
                  "does not prove the mailbox can be read: watch the next mailwarden check.",
}
GENERIC_STEP = ("{system} keeps its own sign-in, separate from mailwarden's: if it lost it too, sign in there again "
                "as {account}, in a private window.")


class Limiter(Throttle):
    """``limit`` requests per ``window_s`` per client, in a bounded table (``throttle.Throttle``)."""

    def __init__(self, limit: int = LIMIT, window_s: float = WINDOW_S, capacity: int = CAPACITY):
        super().__init__(limit, window_s, capacity)


def _client(request: Request) -> str:
    """The client's address: behind a trusted proxy the one it names (``monitor.web.app.ClientAddress``)."""
    return request.client.host if request.client else "-"


def _limited(request: Request) -> Response | None:
    callback = request.url.path == CALLBACK
    name = "reauth_callback_limiter" if callback else "reauth_limiter"
    limiter = getattr(request.app.state, name, None)
    if limiter is None:
        limiter = Limiter(CALLBACK_LIMIT if callback else LIMIT)
        setattr(request.app.state, name, limiter)
    wait = limiter.hit(client_key(_client(request)))
    if not wait:
        return None
    return _page(request, "reauth_result.html", 429, kind="limited", headers={"retry-after": retry_header(wait)})


def _page(request: Request, template: str, status: int = 200, headers: dict[str, str] | None = None,
          **ctx: Any) -> HTMLResponse:
    response = render(request, template, status, refresh=0, **ctx)
    response.headers.update(headers or {})
    return response


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _runtime(request: Request) -> Any:
    monitor = request.app.state.web.monitor
    return monitor.runtime if monitor is not None else None


def redirect_uri(base_url: str) -> str:
    return base_url.rstrip("/") + CALLBACK


def system_step(system: str | None, account: str | None) -> str | None:
    if not system:
        return None
    for needle, text in SYSTEM_STEPS.items():
        if needle in system.lower():
            return text.format(account=account)
    return GENERIC_STEP.format(system=system, account=account)


def link_of(request: Request, name: str) -> str | None:
    """The open request's link for the integration page (None when none is open or no key is at hand)."""
    rt = _runtime(request)
    if rt is None:
        return None
    now = datetime.now(UTC)
    for req in rt.store.reauth.open_reauth_requests(name):
        if not links.expired(req, now):
            return links.url_for(rt.config.web.base_url, links.link_key(rt.cipher), req)
    return None


def _csp_allowing(authority: str) -> str:
    """The app's CSP, with the authority added to form-action: the button's POST is redirected there."""
    from mailwarden.monitor.web.app import CSP

    parts = urlsplit(authority)
    return CSP.replace("form-action 'self'", f"form-action 'self' {parts.scheme}://{parts.netloc}")


async def _request_of(request: Request, rt: Any, token: str) -> tuple[Any, Response | None]:
    """The open request of a valid link, or the page saying why not (audited when the link was genuine)."""
    parsed = links.parse(token)
    req = await asyncio.to_thread(rt.store.reauth.get_reauth_request, parsed[0]) if parsed and rt else None
    if rt is None or not links.verify(links.link_key(rt.cipher), token, req):
        log.warning("reauthorisation link refused: not valid", extra={"client": _client(request)})
        return None, _page(request, "reauth_result.html", 404, kind="invalid_link")
    assert req is not None  # links.verify refuses a link without its request
    now = datetime.now(UTC)
    why = "link_used" if req.open_key is None else "link_expired" if links.expired(req, now) else None
    if why is None:
        return req, None
    await asyncio.to_thread(rt.store.reauth.record_reauth_attempt, request_id=req.id, integration=req.integration,
                            client=_client(request), result=why, detail="link followed after it was closed or "
                            "expired", now=now)
    return None, _page(request, "reauth_result.html", 410, kind=why, req=req)


async def _link(request: Request) -> tuple[Any, Any, Any] | Response:
    """The runtime, the open request the link names and its integration; or the answer refusing the link (too many
    tries, closed, expired, unknown)."""
    if (limited := _limited(request)) is not None:
        return limited
    rt = _runtime(request)
    req, refused = await _request_of(request, rt, request.path_params["token"])
    if refused is not None:
        return refused
    return rt, req, rt.config.integration(req.integration)


async def landing(request: Request) -> Response:
    if isinstance(found := await _link(request), Response):
        return found
    rt, req, integ = found
    response = _page(request, "reauth.html", req=req, integ=integ, token=request.path_params["token"],
                     why=diagnoses.get(req.code) if req.code else None,
                     redirect_uri=redirect_uri(rt.config.web.base_url))
    response.headers["content-security-policy"] = _csp_allowing(rt.tokens.endpoints.authority)
    return response


@csrf.protected
async def start(request: Request, form: dict[str, str]) -> Response:
    if isinstance(found := await _link(request), Response):
        return found
    rt, req, integ = found
    try:
        flow = await asyncio.to_thread(flows.start, rt.tokens, integ, redirect_uri(rt.config.web.base_url))
    except flows.ReauthError as exc:
        return _page(request, "reauth_result.html", 409, kind="refused", req=req, message=exc.message())
    now = datetime.now(UTC)
    sealed = rt.cipher.encrypt(json.dumps(flow).encode())
    attempt = await asyncio.to_thread(rt.store.reauth.start_reauth_attempt, req, client=_client(request),
                                      state_hash=_hash(flow["state"]), flow=sealed, now=now)
    # the browser's sign-in carries no id of mailwarden's: the sign-in log's events of this account meanwhile
    # are "unconfirmed", never the consuming system's (monitor.signins)
    await asyncio.to_thread(open_reauth_window, rt.store, rt.config, integ, "web", now, attempt)
    request.session[SESSION_KEY] = attempt
    return RedirectResponse(flow["auth_uri"], 303)


def _outcome_of(exc: flows.ReauthError, params: dict[str, str]) -> str:
    text = f"{exc.what} {params.get('error_description', '')}"
    if "AADSTS50011" in text:
        return "redirect_uri"
    if params.get("error") == "access_denied" and (params.get("error_subcode") == "cancel" or "AADSTS65004" in text):
        return "cancelled"
    return {"wrong_account": "wrong_account", "consent_missing": "consent_missing",
            "user_not_assigned": "not_assigned"}.get(exc.code, "refused")


async def callback(request: Request) -> Response:
    if (limited := _limited(request)) is not None:
        return limited
    rt = _runtime(request)
    params = {k: v for k, v in request.query_params.items()}
    now, client = datetime.now(UTC), _client(request)
    state = params.get("state") or ""
    attempt = await asyncio.to_thread(rt.store.reauth.claim_reauth_attempt, _hash(state), now) if rt and state else None
    if attempt is None:
        if rt is not None:
            await asyncio.to_thread(rt.store.reauth.record_reauth_attempt, request_id=None, integration=None,
                                    client=client, result="unknown_state",
                                    detail="a callback whose state belongs to no started sign-in (forged, or already "
                                    "used)", now=now)
        return _page(request, "reauth_result.html", 400, kind="unknown_state")
    await asyncio.to_thread(rt.store.signins.close_reauth_window, now, attempt_id=attempt.id)  # the sign-in is over
    finish = rt.store.reauth.finish_reauth_attempt
    req = await asyncio.to_thread(rt.store.reauth.get_reauth_request, attempt.request_id)
    if request.session.get(SESSION_KEY) != attempt.id:
        await asyncio.to_thread(finish, attempt.id, "other_browser", now, detail="callback in another browser")
        return _page(request, "reauth_result.html", 400, kind="other_browser", req=req)
    request.session.pop(SESSION_KEY, None)
    if req is None or req.open_key is None or links.expired(req, now):
        await asyncio.to_thread(finish, attempt.id, "link_used" if req and req.open_key is None else "link_expired",
                                now, detail="the request closed while the sign-in was under way")
        return _page(request, "reauth_result.html", 410, kind="link_used", req=req)
    try:
        integ = rt.config.integration(req.integration)
        flow = json.loads(rt.cipher.decrypt(bytes(attempt.flow)))
        result = await asyncio.to_thread(flows.complete, rt.tokens, integ, flow, params)
    except flows.ReauthError as exc:
        kind = _outcome_of(exc, params)
        await asyncio.to_thread(finish, attempt.id, kind, now, signed_in_as=exc.account, detail=exc.message())
        app = rt.config.apps.get(integ.app)
        return _page(request, "reauth_result.html", 403 if kind == "wrong_account" else 400, kind=kind, req=req,
                     integ=integ, message=redact(exc.message()), signed_in_as=exc.account, missing=exc.missing,
                     client_id=app.client_id if app else None, redirect_uri=redirect_uri(rt.config.web.base_url))
    except KeyError:
        await asyncio.to_thread(finish, attempt.id, "refused", now, detail="integration left the configuration")
        return _page(request, "reauth_result.html", 410, kind="link_used", req=req)
    except Exception as exc:  # noqa: BLE001 - a broken store or network: say so, keep the old token
        log.exception("reauthorisation failed", extra={"integration": req.integration})
        await asyncio.to_thread(finish, attempt.id, "error", now, detail=str(exc))
        text = exc.message() if isinstance(exc, MailwardenError) else "an unexpected error (see the service log)"
        return _page(request, "reauth_result.html", 502, kind="refused", req=req, message=redact(text))
    await asyncio.to_thread(rt.store.reauth.close_reauth_request, req.id, "signed_in", now)
    await asyncio.to_thread(finish, attempt.id, "ok", now, signed_in_as=result.account,
                            detail=f"scopes: {' '.join(result.scopes)}; identity: {result.details.get('identity')}")
    log.info("reauthorised", extra={"integration": integ.name, "account": result.account, "client": client,
                                    "evidence": result.details.get("evidence")})
    checks = await _run_checks(request, integ)
    return _page(request, "reauth_result.html", kind="ok", req=req, integ=integ, signed_in_as=result.account,
                 checks=checks, all_ok=bool(checks) and all(c["status"] in ("ok", "warn") for c in checks),
                 system_step=system_step(integ.system, integ.account))


async def _run_checks(request: Request, integ: Any) -> list[dict[str, Any]]:
    """The integration's checks, now, through the running Monitor's runner (token first: the others depend
    on it). Delegated tokens come from a fresh MSAL app object each time (monitor.tokens), so MSAL's 60 s
    replay of the old refresh token's HTTP 400 cannot hide the new sign-in."""
    monitor = request.app.state.web.monitor
    if monitor is None:
        return []
    results = await monitor.runtime.runner.run_many([(integ.name, list(integ.checks))])  # dependencies first
    # the result pipeline (monitor.pipeline) already sent each result to the dispatcher (at once after a
    # transition: the recovery notice follows) and to the metrics
    out = []
    for r in results:
        code = r.outcome.code
        out.append({"check": r.check, "status": r.outcome.status.value, "code": code,
                    "title": diagnoses.get(code).title if code else None, "summary": redact(r.outcome.summary)})
    return out


ROUTES = [
    Route("/reauth/{token}", landing, methods=["GET"]),
    Route("/reauth/{token}", start, methods=["POST"]),
    Route(CALLBACK, callback, methods=["GET"]),
]
