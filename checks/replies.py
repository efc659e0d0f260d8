"""What the token endpoint answered, as HTTP, recorded beside MSAL: MSAL raises on a 5xx and on a body that is not
JSON (the plain-text 429, an HTML error page), and then only the status tells what happened (M365_FACTS.md,
"Throttling and transient replies"). The token provider's HTTP session records every reply here
(``record_token_replies``); the checks read the one of their own request."""

from __future__ import annotations

import threading
from dataclasses import dataclass

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
