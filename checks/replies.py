"""What the token endpoint answered, as HTTP, recorded beside MSAL: MSAL raises on a 5xx and on a body that is not
JSON (the plain-text 429, an HTML error page), and then only the status tells what happened (M365_FACTS.md,
"Throttling and transient replies"). The token provider's HTTP session records every reply here
(``record_token_replies``); the checks read the one of their own request.

The same session also reports every token request before it is sent (``record_token_requests``): its
``client-request-id`` is the ``correlationId`` of the sign-in Entra ID logs for it, which is how mailwarden's own
sign-ins are told apart from the consuming system's (``monitor.signins``)."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from mailwarden.durations import retry_after


@dataclass(frozen=True)
class TokenReply:
    """What the token endpoint answered, as HTTP: MSAL raises on a 5xx and on a body that is not JSON (the
    plain-text 429, an HTML error page), and then only the status tells what happened (M365_FACTS.md)."""

    status: int
    headers: dict[str, str]
    text: str
    url: str

    def retry_after_s(self) -> float | None:
        return retry_after(self.headers.get("retry-after"))


class _Replies:
    """The token endpoint's latest reply per worker thread (the caller's own request), and per (URL, client):
    MSAL replays a 429/5xx from its own cache without a request while Retry-After lasts."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._by_client: dict[tuple[str, str], TokenReply] = {}
        self._lock = threading.Lock()

    def begin(self) -> None:
        self._local.reply = None

    def record(self, reply: TokenReply, client_id: str) -> None:
        self._local.reply = reply
        if reply.status >= 400:
            with self._lock:
                if len(self._by_client) > 4096:
                    self._by_client.clear()
                self._by_client[(reply.url, client_id)] = reply

    def last(self, url: str | None = None, client_id: str | None = None) -> TokenReply | None:
        mine = getattr(self._local, "reply", None)
        if mine is not None or url is None:
            return mine
        with self._lock:
            return self._by_client.get((url, client_id or ""))


REPLIES = _Replies()
log = logging.getLogger("mailwarden.tokens")


def record_token_replies(session: requests.Session) -> requests.Session:
    post = session.post

    def recorded(url, *args, **kwargs):
        resp = post(url, *args, **kwargs)
        if str(url).endswith("/token"):
            data = kwargs.get("data")
            client_id = str(data.get("client_id") or "") if isinstance(data, dict) else ""
            text = resp.text[:4000] if resp.status_code >= 400 else ""
            REPLIES.record(TokenReply(resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, text,
                                      str(url)), client_id)
        return resp

    session.post = recorded  # type: ignore[method-assign]
    return session


# -- mailwarden's own token requests, as Entra ID's sign-in log will name them ----------------------------------------
CLIENT_REQUEST_ID = "client-request-id"


@dataclass(frozen=True)
class TokenRequest:
    """One POST to a token endpoint, as mailwarden sent it. Entra ID logs the sign-in it causes with the request's
    ``client-request-id`` as the event's ``correlationId``: the exact way to tell mailwarden's own sign-ins from the
    consuming system's (MSAL makes the id and offers no way to choose it, so it is read off the request itself)."""

    correlation_id: str
    tenant: str  # the authority's tenant segment: a tenant id or a domain, as configured
    client_id: str
    at: datetime
    generated: bool = False  # MSAL sent no client-request-id: mailwarden set this one on the request


def _token_path(path: str) -> str | None:
    """The tenant segment of a token endpoint's path (``/<tenant>/oauth2[/v2.0]/token``); None for other paths."""
    parts = path.rstrip("/").split("/")
    if parts[-1] != "token" or "oauth2" not in parts:
        return None
    at = parts.index("oauth2")
    return parts[at - 1] if at >= 1 else ""


def _client_id_of(body: Any) -> str:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str):
        return ""
    return (parse_qs(body).get("client_id") or [""])[0].lower()


def record_token_requests(session: requests.Session,
                          on_request: Callable[[TokenRequest], None]) -> requests.Session:
    """Hand every POST to a token endpoint to ``on_request`` before it is sent (so before MSAL can see its answer),
    with the ``client-request-id`` MSAL put on it; one MSAL did not set is made here, so the log can still be
    matched. ``on_request`` is the application's (monitor records it in the database); it should not raise, and
    what it raises is logged and never stops the token request."""
    send = session.send

    def sending(request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        tenant = _token_path(urlsplit(request.url or "").path) if request.method == "POST" else None
        if tenant is not None:
            rid = request.headers.get(CLIENT_REQUEST_ID)
            generated = not rid
            if generated:
                rid = request.headers[CLIENT_REQUEST_ID] = str(uuid.uuid4())
            try:
                on_request(TokenRequest(str(rid), tenant, _client_id_of(request.body), datetime.now(UTC), generated))
            except Exception:  # noqa: BLE001 - recording must never cost mailwarden its token
                log.exception("token request not recorded")
        return send(request, **kwargs)

    session.send = sending  # type: ignore[method-assign]
    return session
