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
    if value and len(value) >= 6:
        with _lock:
            _known.add(value)


def redact(text: Any) -> str:
    if text is None:
        return ""
    out = str(text)
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in out:
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
