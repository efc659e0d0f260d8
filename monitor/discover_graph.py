"""Graph reads for `mailwarden discover`: one GET with a bounded wait on throttling, and listings that follow
``@odata.nextLink`` up to a page cap, keeping what was read when a page fails.

A 429, 503 or 504 is retried after the Retry-After Microsoft asks for (M365_FACTS.md, "Throttling and transient
replies"), each wait and their sum bounded: past the bound the read gives up and says so (a discovery is run by a
person or a script, not a scheduler that could come back later). Every other answer is returned as it is: the
caller decides what a 403 means (a missing optional permission is a note, a missing Application.Read.All the end).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from mailwarden.checks import graph_client
from mailwarden.checks.network import network_code
from mailwarden.durations import retry_after
from mailwarden.redact import redact

RETRY_STATUSES = (429, 503, 504)
DEFAULT_WAIT_S = 5.0  # a throttling answer without Retry-After
MAX_WAIT_S = 30.0  # the longest single wait honoured
WAIT_BUDGET_S = 120.0  # all waits of one tenant's discovery together
MAX_ATTEMPTS = 5  # of one request (the first and four retries)
MAX_PAGES = 200  # of one listing: 199,800 objects at $top=999
REPLY_CAP = 64 * 1024 * 1024  # one page of 999 applications with their credentials is a few megabytes


@dataclass(frozen=True)
class ReadError:
    """Why a read gave nothing (or stopped): what was read, Graph's status and error code, and a sentence."""

    what: str  # e.g. "the list of service principals"
    status: int | None  # HTTP status, None when no answer came
    code: str | None  # Graph's error code, or a network code (dns_error, timeout, ...)
    detail: str  # what was answered, redacted

    @property
    def forbidden(self) -> bool:
        return self.status == 403

    def sentence(self) -> str:
        return f"{self.what}: {self.detail}"


@dataclass
class Listing:
    """The objects of a listing, and whether every page was read (else ``error`` says why it stopped)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    pages: int = 0
    complete: bool = True
    error: ReadError | None = None


class GraphReader:
    """GETs with one bearer token through one capped httpx client; counts its requests and its waits."""

    def __init__(self, http: httpx.AsyncClient, token: str, *, sleep: Callable[[float], Awaitable[Any]] | None = None,
                 max_wait_s: float = MAX_WAIT_S, wait_budget_s: float = WAIT_BUDGET_S,
                 max_pages: int = MAX_PAGES):
        self.http = http
        self.token = token
        self.sleep = sleep or asyncio.sleep
        self.max_wait_s = max_wait_s
        self.wait_budget_s = wait_budget_s
        self.max_pages = max_pages
        self.requests = 0
        self.waited_s = 0.0

    async def get(self, url: str, params: dict[str, str] | None, what: str) -> dict[str, Any] | ReadError:
        """The JSON body of a 200, or why not."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            self.requests += 1
            try:
                resp = await self.http.get(url, params=params, headers={"Authorization": f"Bearer {self.token}"})
            except Exception as exc:  # noqa: BLE001 - every failure is said, none escapes
                return self._failure(what, exc)
            if resp.status_code == 200:
                try:
                    body = json.loads(resp.content) if len(resp.content) < 1 << 20 else \
                        await asyncio.to_thread(json.loads, resp.content)  # megabytes: off the event loop
                except ValueError as exc:
                    return ReadError(what, 200, None, f"Graph's answer is not JSON ({exc})")
                if not isinstance(body, dict):
                    return ReadError(what, 200, None, "Graph answered something that is not a JSON object")
                return body
            error = graph_client.error_body(resp)
            if resp.status_code in RETRY_STATUSES and attempt < MAX_ATTEMPTS:
                wait = retry_after(resp.headers.get("retry-after"))
                wait = DEFAULT_WAIT_S if wait is None else wait
                if wait <= self.max_wait_s and self.waited_s + wait <= self.wait_budget_s:
                    self.waited_s += wait
                    await self.sleep(wait)
                    continue
                return ReadError(what, resp.status_code, error[0],
                                 _said(resp.status_code, *error) + f"; Graph asked to wait {wait:g} s, more than "
                                 f"discover waits (at most {self.max_wait_s:g} s at a time, "
                                 f"{self.wait_budget_s:g} s in all): run it again later")
            return ReadError(what, resp.status_code, error[0], _said(resp.status_code, *error)
                             + (f" (after {attempt} attempts)" if attempt > 1 else ""))
        raise AssertionError("unreachable")  # pragma: no cover

    async def listing(self, url: str, params: dict[str, str] | None, what: str) -> Listing:
        """Every page of a collection, following @odata.nextLink (which carries the query) up to the page cap."""
        out = Listing()
        next_url: str | None = url
        while next_url:
            if out.pages >= self.max_pages:
                out.complete = False
                out.error = ReadError(what, None, "page_cap", f"stopped after {out.pages} pages "
                                      f"({len(out.items)} objects): more remain than discover reads")
                return out
            body = await self.get(next_url, params, what if out.pages == 0 else f"{what} (page {out.pages + 1})")
            if isinstance(body, ReadError):
                out.complete = False
                out.error = body
                return out
            out.pages += 1
            out.items += [v for v in body.get("value") or [] if isinstance(v, dict)]
            link = body.get("@odata.nextLink")
            next_url, params = (link if isinstance(link, str) and link else None), None
        return out

    def _failure(self, what: str, exc: BaseException) -> ReadError:
        big = graph_client.too_large(exc)
        if big is not None:
            return ReadError(what, None, "reply_too_large", str(big))
        code = network_code(exc, default="connection_refused")
        if code is not None:
            return ReadError(what, None, code, f"Graph could not be reached ({code}): {redact(exc)}")
        return ReadError(what, None, "unclassified", f"{type(exc).__name__}: {redact(exc)}")




def _said(status: int, code: str | None, message: str) -> str:
    text = redact(message).strip().rstrip(".")
    return f"Graph answered {status}" + (f" {code}" if code else "") + (f" ({text})" if text else "")
