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

from mailwarden.checks.base import Outcome, Status
from mailwarden.endpoints import Endpoints
from mailwarden.redact import redact


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


WORDS = {"timeout": "did not answer in time", "dns_error": "could not be resolved (DNS)",
         "tls_error": "failed the TLS handshake or certificate check",
         "connection_refused": "refused the connection"}


def network_outcome(exc: BaseException, host: str, *, default: str = "idp_unreachable",
                    login_host: bool = False) -> Outcome | None:
    """``login_host``: ``host`` is the sign-in service. Whether it refuses, times out or does not resolve, it is
    one cause for every check of that cloud (``idp_unreachable``), with what happened in the summary; a TLS failure
    keeps its own code (its fix is about certificates, not reachability)."""
    code = network_code(exc, default=default)
    if code is None:
        return None
    words = WORDS.get(code, "could not be reached")
    if code == "tls_error":
        words = tls_words(exc, host)
    elif login_host:
        code = "idp_unreachable"
    return Outcome(Status.ERROR, code, f"{host} {words}: {redact(_last_line(exc))}")


def tls_words(exc: BaseException, host: str) -> str:
    """What failed in a TLS handshake, naming the certificate's problem and the host name checked."""
    for err in _chain(exc):
        if isinstance(err, ssl.SSLCertVerificationError):
            message = (err.verify_message or "").strip()
            if "hostname mismatch" in message.lower() or "ip address mismatch" in message.lower():
                name = host.split("://", 1)[-1].split("/", 1)[0]
                return (f"presented a certificate that is not valid for the host name {name} ({message}): the "
                        "configured host is wrong, or something between mailwarden and Microsoft answers with its "
                        "own certificate")
            if message:
                return f"presented a certificate mailwarden does not trust ({message})"
    return WORDS["tls_error"]


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[-1][:300]


def http_session(endpoints: Endpoints) -> requests.Session:
    """A requests session for the configured cloud (its CA bundle)."""
    session = requests.Session()
    session.verify = endpoints.verify
    if endpoints.ca_bundle:
        # REQUESTS_CA_BUNDLE and friends would otherwise override verify (M365_FACTS.md).
        session.trust_env = False
    return session
