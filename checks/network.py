"""Turn a failure to get any answer (DNS, refused, TLS, timeout) into a diagnosis code.

These are ``error`` results: nothing is known about the credential or the mailbox, only that the host
did not answer. Shared by every check kind.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

import httpx
import requests

from checks.base import Outcome, Status
from monitor.redact import redact


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
        if cur is None and seen[-1].args and isinstance(seen[-1].args[0], BaseException):
            cur = seen[-1].args[0]
    return seen


def network_code(exc: BaseException, *, default: str = "idp_unreachable") -> str | None:
    """The diagnosis code of a network-level failure, or None when ``exc`` is something else."""
    chain = _chain(exc)
    text = " ".join(str(e) for e in chain).lower()
    timeouts = (TimeoutError, socket.timeout, asyncio.TimeoutError, requests.Timeout, httpx.TimeoutException)
    if any(isinstance(e, timeouts)
           for e in chain):
        return "timeout"
    if any(isinstance(e, socket.gaierror) for e in chain) or any(
            s in text for s in ("name or service not known", "nodename nor servname", "nameresolutionerror",
                                "temporary failure in name resolution", "no address associated")):
        return "dns_error"
    if any(isinstance(e, ssl.SSLError | requests.exceptions.SSLError) for e in chain) or "certificate verify" in text:
        return "tls_error"
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "connection refused" in text:
        return "connection_refused"
    if any(isinstance(e, ConnectionError | OSError | requests.ConnectionError | httpx.TransportError)
           for e in chain):
        return default
    return None


def network_outcome(exc: BaseException, host: str, *, default: str = "idp_unreachable") -> Outcome | None:
    code = network_code(exc, default=default)
    if code is None:
        return None
    words = {"timeout": "did not answer in time", "dns_error": "could not be resolved (DNS)",
             "tls_error": "failed the TLS handshake or certificate check",
             "connection_refused": "refused the connection"}.get(code, "could not be reached")
    return Outcome(Status.ERROR, code, f"{host} {words}: {redact(_last_line(exc))}")


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[-1][:300]
