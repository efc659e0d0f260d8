"""A Graph client for checks: msgraph-sdk over httpx, pointed at the configured cloud, WITHOUT kiota's
retry middleware (it would sleep up to 180 s on a 429 inside a check: the check reports `throttled`
and the next run waits for Retry-After instead)."""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable
from typing import Any

import httpx

from monitor.endpoints import Endpoints


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

    verify = _tls_context(endpoints.ca_bundle) if endpoints.ca_bundle else True
    http = httpx.AsyncClient(verify=verify, timeout=timeout_s, trust_env=not endpoints.ca_bundle)
    client = GraphClientFactory.create_with_custom_middleware([], client=http)
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(_Tokens()), client=client)
    adapter.base_url = endpoints.graph
    return GraphServiceClient(request_adapter=adapter), http


def verify_for(endpoints: Endpoints) -> ssl.SSLContext | bool:
    """httpx's ``verify`` for the configured cloud (one cached SSL context per CA bundle)."""
    return _tls_context(endpoints.ca_bundle) if endpoints.ca_bundle else True


@functools.lru_cache(maxsize=8)
def _tls_context(ca_bundle: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_bundle)


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
