"""The one redaction helper. Everything that leaves the process (logs, results, transcripts, alerts,
reports, exception text) goes through it.

Two layers: exact values we know are secret (resolved client secrets, refresh tokens, key material:
registered with ``register_secret`` the moment they are read), and patterns that look like bearer
material whatever their origin (JWTs, XOAUTH2 blobs, ``Bearer ...``, refresh tokens in JSON,
``client_secret=`` in form bodies, passwords in URLs).
"""

from __future__ import annotations

import re
import threading
from typing import Any

MASK = "[redacted]"

_known: set[str] = set()
_lock = threading.Lock()
# Known values by their first _PREFIX characters, longest first; rebuilt when a value is registered.
# redact() runs several times per check (log fields, transcript lines) while hundreds of secrets are
# known: looking up the text's windows is O(len(text)), testing every secret was O(secrets) (bench/).
_PREFIX = 6
_index: dict[str, list[str]] | None = None

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # JWTs: three base64url segments, the first starting like a JSON header
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), MASK),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1" + MASK),
    # XOAUTH2 initial responses are base64 of "user=...\x01auth=Bearer ..."
    (re.compile(r"dXNlcj[A-Za-z0-9+/=]{20,}"), MASK),
    (re.compile(r"(?i)((?:client_secret|refresh_token|access_token|id_token|code_verifier|client_assertion|"
                r"password|secretText|device_code)[\"']?\s*[:=]\s*[\"']?)[^\"'&\s,}]{4,}"), r"\1" + MASK),
    # authorization codes in redirect URLs
    (re.compile(r"([?&#](?:code|session_state)=)[^&\s]+"), r"\1" + MASK),
    # user:password@ in URLs (Apprise and database URLs)
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^/:@\s]+:)[^@/\s]+@"), r"\1" + MASK + "@"),
]


def register_secret(value: str | None) -> None:
    """Remember a secret value so that it is masked wherever it appears later."""
    global _index
    if value and len(value) >= _PREFIX:
        with _lock:
            if value not in _known:
                _known.add(value)
                _index = None


def _known_index() -> dict[str, list[str]]:
    global _index
    with _lock:
        if _index is None:
            index: dict[str, list[str]] = {}
            for value in sorted(_known, key=len, reverse=True):
                index.setdefault(value[:_PREFIX], []).append(value)
            _index = index
        return _index


def redact(text: Any) -> str:
    if text is None:
        return ""
    out = str(text)
    index = _known_index()
    if index:
        found = {v for i in range(len(out) - _PREFIX + 1) for v in index.get(out[i:i + _PREFIX], ())}
        for value in sorted(found, key=len, reverse=True):
            out = out.replace(value, MASK)
    for pattern, repl in _PATTERNS:
        out = pattern.sub(repl, out)
    return out


def redact_obj(obj: Any) -> Any:
    """Redact every string inside a JSON-like structure."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_obj(v) for v in obj]
    return obj
