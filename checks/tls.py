"""The TLS contexts the checks connect with, built once per CA bundle and shared (an SSLContext is safe to
share between threads and connections).

httpx builds a context for every client it is given ``verify=True``: loading certifi's bundle, about 18 ms
of CPU, for every graph_mail check and every credential read where no CA bundle is configured (the
production case), several times the check's own work (bench/RESULTS.md, session 3). A bundle file replaced
on disk (a CA rotated) is read again: the cache key includes its modification time and size.
"""

from __future__ import annotations

import functools
import os
import ssl


@functools.lru_cache(maxsize=16)
def _context(cafile: str | None, capath: str | None, tls12: bool, _stamp: tuple[int, ...]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile, capath=capath)
    if tls12:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _stamp(path: str | None) -> tuple[int, int]:
    if not path:
        return (0, 0)
    st = os.stat(path)  # a missing bundle raises here, as ssl would
    return (st.st_mtime_ns, st.st_size)


def context(cafile: str | None = None, capath: str | None = None, *, tls12: bool = False) -> ssl.SSLContext:
    """A verifying client context trusting ``cafile``/``capath``, or the system store when neither is given."""
    return _context(cafile, capath, tls12, _stamp(cafile) + _stamp(capath))


def mail_context(ca_bundle: str | None) -> ssl.SSLContext:
    """IMAP, POP, SMTP and EWS: the cloud's CA bundle when configured, else the system store; TLS 1.2 at least."""
    return context(ca_bundle, tls12=True)


def http_verify(ca_bundle: str | None) -> ssl.SSLContext:
    """httpx's ``verify`` for Graph: the cloud's CA bundle when configured, else what httpx itself would trust
    (SSL_CERT_FILE / SSL_CERT_DIR from the environment, else certifi's bundle), as one shared context."""
    if ca_bundle:
        return context(ca_bundle)
    if os.environ.get("SSL_CERT_FILE"):
        return context(os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return context(capath=os.environ["SSL_CERT_DIR"])
    import certifi

    return context(certifi.where())
