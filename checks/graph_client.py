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
from collections.abc import AsyncIterator, Callable
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
                  cap: int = MAX_REPLY_BYTES) -> httpx.AsyncClient:
    """An httpx client whose replies are read with ``cap`` on the body (``ReplyTooLarge`` past it)."""
    async def limit(response: httpx.Response) -> None:
        _cap_response(response, cap)

    return httpx.AsyncClient(verify=verify, timeout=timeout, trust_env=trust_env,
                             event_hooks={"response": [limit]})


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


class TokenRefused(Exception):
    """The identity provider refused the token the Graph call needs; carries MSAL's error dict."""

    def __init__(self, result: dict[str, Any]):
        self.result = result
        super().__init__(result.get("error", "token refused"))


def build(endpoints: Endpoints, get_token: Callable[[], dict[str, Any]], timeout_s: float):
    """A GraphServiceClient whose bearer token comes from ``get_token`` (an MSAL result dict)."""
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
            result = await asyncio.to_thread(get_token)
            if "access_token" not in result:
                raise TokenRefused(result)
            return result["access_token"]

        def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
            return AllowedHostsValidator([httpx.URL(endpoints.graph).host])

    verify = http_verify(endpoints.ca_bundle)
    http = capped_client(verify=verify, timeout=timeout_s, trust_env=not endpoints.ca_bundle)
    client = GraphClientFactory.create_with_custom_middleware([], client=http)
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(_Tokens()), client=client)
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
