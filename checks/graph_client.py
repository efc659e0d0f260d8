"""A Graph client for checks: msgraph-sdk over httpx, pointed at the configured cloud, WITHOUT kiota's
retry middleware (it would sleep up to 180 s on a 429 inside a check: the check reports `throttled`
and the next run waits for Retry-After instead).

Every HTTP client of the Graph and EWS checks and of the credential read comes from ``capped_client``: a
reply body is read streamed and given up with ``ReplyTooLarge`` past ``MAX_REPLY_BYTES``, on the wire and
after gzip/deflate decoding (a hostile or broken server's 8 MB body would otherwise be read whole and parsed
on the event loop for seconds). The cap sits in an httpx response hook, below kiota: msgraph-sdk reads its
reply through the client passed in, so it needs no change.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx

from mailwarden.checks.tls import http_verify
from mailwarden.endpoints import Endpoints

# The largest HTTP reply body read (after decoding). What the checks read is a few KB: a mail folder, one
# message's receivedDateTime, an EWS GetFolder reply, an application object with its credentials (some
# hundred bytes each). 256 KiB leaves room for a verbose error page and stays quick to parse.
MAX_REPLY_BYTES = 256 * 1024


class ReplyTooLarge(Exception):
    """A reply body longer than the cap; raised while it is read, so nothing past the cap is kept."""

    def __init__(self, url: httpx.URL, cap: int, declared: int | None = None):
        self.where = reply_location(url)
        self.cap = cap
        said = f"; it announced {declared}" if declared is not None else ""
        super().__init__(f"the reply from {self.where} exceeded {cap} bytes (the most mailwarden reads of a "
                         f"reply{said})")


def reply_location(url: httpx.URL) -> str:
    """The URL without its query (where the reply came from, short)."""
    return str(url.copy_with(query=None, fragment=None))


def too_large(exc: BaseException) -> ReplyTooLarge | None:
    """The ReplyTooLarge behind ``exc`` (itself or a cause), if any."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ReplyTooLarge):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def capped_client(*, verify: ssl.SSLContext | bool, timeout: float, trust_env: bool,
                  cap: int = MAX_REPLY_BYTES, resend: bool = False) -> httpx.AsyncClient:
    """An httpx client whose replies are read with ``cap`` on the body (``ReplyTooLarge`` past it); ``resend``: a
    request whose kept-alive connection was dropped is sent once more (``_Resend``), for a client used by many checks.
    """
    async def limit(response: httpx.Response) -> None:
        _cap_response(response, cap)

    if not resend:
        return httpx.AsyncClient(verify=verify, timeout=timeout, trust_env=trust_env,
                                 event_hooks={"response": [limit]})
    # A client many checks share: no cap of its own on connections (each check had its own client before, and one
    # waiting for a capped pool's connection would time out: a false alert; the runner's limits hold instead), and
    # no cookies kept (one mailbox's or tenant's cookie, EWS's X-BackEndCookie, would go out with the next's).
    http = httpx.AsyncClient(verify=verify, timeout=timeout, trust_env=trust_env, event_hooks={"response": [limit]},
                             limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
                             cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])))
    # _Resend around the transports httpx built, the environment's proxies included (a transport passed in would
    # have turned them off); msgraph-core wraps them the same way (GraphClientFactory._load_middleware_to_client)
    http._transport = _Resend(http._transport)  # noqa: SLF001
    http._mounts = {pattern: None if t is None else _Resend(t) for pattern, t in http._mounts.items()}  # noqa: SLF001
    return http


def _cap_response(response: httpx.Response, cap: int) -> None:
    """Runs before httpx reads the body: refuse an announced oversized body at once, else wrap the raw
    stream so reading stops past the cap. gzip/deflate are decoded here (the header is dropped so httpx
    does not decode again): a small compressed body must not inflate past the cap either."""
    url = response.request.url
    declared = response.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > cap:
        raise ReplyTooLarge(url, cap, int(declared))
    codings = [c.strip().lower() for c in response.headers.get_list("content-encoding", split_commas=True)]
    codings = [c for c in codings if c and c != "identity"]
    if len(codings) > 1:
        raise httpx.DecodingError(f"the reply from {reply_location(url)} is encoded several times "
                                  f"({', '.join(codings)})", request=response.request)
    coding = codings[0] if codings and codings[0] in ("gzip", "deflate") else None
    if coding is not None:
        del response.headers["content-encoding"]
    response.stream = _CappedStream(response.stream, url, cap, coding)


class _CappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: Any, url: httpx.URL, cap: int, coding: str | None):
        self._inner, self._url, self._cap, self._coding = inner, url, cap, coding

    async def __aiter__(self) -> AsyncIterator[bytes]:
        raw = decoded = 0
        inflate = None
        async for chunk in self._inner:
            raw += len(chunk)
            if raw > self._cap:
                raise ReplyTooLarge(self._url, self._cap)
            if self._coding is None:
                yield chunk
                continue
            if inflate is None and chunk:
                # deflate is meant to be zlib-wrapped (RFC 9110) but some servers send it raw
                zlib_header = self._coding == "deflate" and (chunk[0] & 0x0F) == 8
                wbits = zlib.MAX_WBITS | 16 if self._coding == "gzip" else (
                    zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
                inflate = zlib.decompressobj(wbits)
            data = chunk
            while data and inflate is not None:
                try:
                    out = inflate.decompress(data, self._cap + 1 - decoded)  # never more than the cap + 1
                except zlib.error as exc:
                    raise httpx.DecodingError(f"the reply from {reply_location(self._url)} is not valid "
                                              f"{self._coding}: {exc}") from exc
                decoded += len(out)
                if decoded > self._cap:
                    raise ReplyTooLarge(self._url, self._cap)
                if out:
                    yield out
                data = inflate.unconsumed_tail
        if inflate is not None:
            out = inflate.flush()
            if decoded + len(out) > self._cap:
                raise ReplyTooLarge(self._url, self._cap)
            if out:
                yield out

    async def aclose(self) -> None:
        await self._inner.aclose()


# What a dropped kept-alive connection raises: the server closed it (idle timeout, restart) while it sat in the pool,
# and the request sent on it got no reply.
_DROPPED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
RESEND = "mailwarden.resend"  # a request extension: this POST may be sent twice (it reads, as EWS GetFolder does)


class _Resend(httpx.AsyncBaseTransport):
    """Sends a request once more, on a new connection, when the connection it went out on was dropped without a
    reply: with connections kept alive between checks, a server that closed one meanwhile must not fail a check (a
    false alert). Only requests that may be sent twice: GET, HEAD, OPTIONS, or marked ``RESEND``. A server that
    really drops every connection fails the second send too, and the check reports it."""

    def __init__(self, inner: httpx.AsyncBaseTransport):
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._inner.handle_async_request(request)
        except _DROPPED:
            if request.method not in ("GET", "HEAD", "OPTIONS") and not request.extensions.get(RESEND):
                raise
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


POOLS = 4  # clients per setting in SharedHttp (its docstring: httpcore's pool costs O(n^2) in its connections)


class SharedHttp:
    """The capped HTTP clients of one event loop, shared by its Graph and EWS checks (the runner keeps one per loop):
    a check reuses a kept-alive connection to the same host instead of a TCP connect and TLS handshake of its own
    (about 2 ms of CPU each, bench/), and a Graph client's middleware pipeline is built once, not per check. One
    client per (TLS trust, timeout, proxy use, Graph or not) and pool; a dropped kept-alive connection is retried
    (``_Resend``).

    Each setting has ``POOLS`` clients, a mailbox's checks always on the same one (``spread``): httpcore 1.0.9's pool
    walks every connection it holds, several times over, for each request it assigns or releases (O(n^2) in the
    connections at once: encode/httpcore#1035, not merged), which was 40 % of a burst of 150 Graph checks' CPU under
    yappi, on one pool (bench/RESULTS.md). Four pools hold a quarter of the connections each: a sixteenth of the
    walking. A mailbox checked again reuses its pool's kept-alive connection as before.
    """

    def __init__(self) -> None:
        self._clients: dict[tuple[int, float, bool, bool, int], httpx.AsyncClient] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: set[asyncio.Task] = set()

    def client(self, *, verify: ssl.SSLContext, timeout: float, trust_env: bool, graph: bool = False,
               spread: str = "") -> httpx.AsyncClient:
        """The shared client for these settings (``verify``: one of checks.tls's shared contexts, so its identity
        is the trust it stands for); ``graph``: with msgraph-core's (empty) middleware pipeline, as ``build`` wants;
        ``spread`` (the mailbox) picks one of the ``POOLS`` clients, the same one every time."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a runner serving another asyncio.run(): the old loop's connections are gone
            self._clients, self._loop = {}, loop
        key = (id(verify), float(timeout), trust_env, graph, zlib.crc32(spread.encode()) % POOLS)
        http = self._clients.get(key)
        if http is None or http.is_closed:
            http = capped_client(verify=verify, timeout=timeout, trust_env=trust_env, resend=True)
            if graph:
                from msgraph_core import GraphClientFactory

                http = GraphClientFactory.create_with_custom_middleware([], client=http)
            self._clients[key] = http
        return http

    def close(self, grace: float = 0.0) -> None:
        """Close the connections (the runtime closes). Called on their loop (a reload), after ``grace`` seconds: the
        checks still under way with the old runtime keep their client until they end (closed under them, their
        requests would fail: a false alert). On a loop that stopped, by running it; on a closed loop, nothing is
        left to close."""
        clients, self._clients = list(self._clients.values()), {}
        loop = self._loop
        if not clients or loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task = loop.create_task(self._close_later(clients, grace))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        elif running is None and not loop.is_running():
            loop.run_until_complete(self._close_later(clients, 0.0))

    @staticmethod
    async def _close_later(clients: list[httpx.AsyncClient], grace: float) -> None:
        if grace > 0:
            await asyncio.sleep(grace)
        await asyncio.gather(*(http.aclose() for http in clients), return_exceptions=True)


def build(endpoints: Endpoints, token: str, timeout_s: float, shared: SharedHttp | None = None, mailbox: str = ""):
    """A GraphServiceClient presenting ``token`` (the check fetched it), and its HTTP client: ``shared``'s when given
    (not to be closed by the caller; ``mailbox`` picks its pool), else one of its own (to be closed)."""
    # Imported here: msgraph-sdk costs about half a second to import.
    from kiota_abstractions.authentication import (
        AccessTokenProvider,
        AllowedHostsValidator,
        BaseBearerTokenAuthenticationProvider,
    )
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph_core import GraphClientFactory

    class _Tokens(AccessTokenProvider):
        async def get_authorization_token(self, uri: str, additional_authentication_context=None) -> str:
            return token  # no thread hand-off per request: the token is at hand

        def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
            return AllowedHostsValidator([httpx.URL(endpoints.graph).host])

    verify = http_verify(endpoints.ca_bundle)
    if shared is not None:
        http = shared.client(verify=verify, timeout=timeout_s, trust_env=not endpoints.ca_bundle, graph=True,
                             spread=mailbox)
    else:
        http = GraphClientFactory.create_with_custom_middleware([], client=capped_client(
            verify=verify, timeout=timeout_s, trust_env=not endpoints.ca_bundle))
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(_Tokens()), client=http)
    adapter.base_url = endpoints.graph
    return GraphServiceClient(request_adapter=adapter), http


def verify_for(endpoints: Endpoints) -> ssl.SSLContext:
    """httpx's ``verify`` for the configured cloud: one shared context (checks.tls). httpx's own ``verify=True``
    loaded certifi's bundle again for every client, about 20 ms of CPU per check (bench/)."""
    return http_verify(endpoints.ca_bundle)


def error_body(resp: Any) -> tuple[str | None, str]:
    """(Graph's error code, its message) from an HTTP reply's ``{"error": {"code", "message"}}`` body; a body that is
    not that shape (HTML, text, another JSON) gives no code and its first 200 characters as the message."""
    try:
        error = resp.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    if not isinstance(error, dict):
        error = {}
    code = error.get("code")
    message = error.get("message") or ("" if error else resp.text[:200])
    return (str(code) if code else None), str(message)


def graph_error(exc: BaseException) -> tuple[int | None, str | None, str, dict[str, str]] | None:
    """(status, Graph error code, message, headers) of a kiota API error, or None for other exceptions."""
    from kiota_abstractions.api_error import APIError

    if not isinstance(exc, APIError):
        return None
    code, message = None, exc.message or ""
    err = getattr(exc, "error", None)
    if err is not None:
        code = getattr(err, "code", None)
        message = getattr(err, "message", None) or message
    return exc.response_status_code, code, message, dict(exc.response_headers or {})
