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

_SHORTEST = 7  # shorter text holds no known secret (_PREFIX) and matches no pattern ("?code=x")
_KEYWORDS = ("client_secret", "refresh_token", "access_token", "id_token", "code_verifier", "client_assertion",
             "password", "secretText", "device_code")
# (pattern, replacement, needles): a pattern is only tried on text that contains one of its needles
# (casefolded: what IGNORECASE also matches), literals it cannot match without. Every check redacts several
# lines; the URL pattern alone cost about 20 us a line when tried blind (bench/).
_PATTERNS: list[tuple[re.Pattern[str], str, tuple[str, ...]]] = [
    # JWTs: three base64url segments, the first starting like a JSON header
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), MASK, ("eyj",)),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1" + MASK, ("bearer",)),
    # XOAUTH2 initial responses are base64 of "user=...\x01auth=Bearer ..."
    (re.compile(r"dXNlcj[A-Za-z0-9+/=]{20,}"), MASK, ("dxnlcj",)),
    (re.compile(r"(?i)((?:" + "|".join(_KEYWORDS) + r")[\"']?\s*[:=]\s*[\"']?)[^\"'&\s,}]{4,}"), r"\1" + MASK,
     tuple(k.lower() for k in _KEYWORDS)),
    # authorization codes in redirect URLs
    (re.compile(r"([?&#](?:code|session_state)=)[^&\s]+"), r"\1" + MASK, ("code=", "session_state=")),
    # user:password@ in URLs (Apprise and database URLs)
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^/:@\s]+:)[^@/\s]+@"), r"\1" + MASK + "@", ("://",)),
]

_NEEDLES = re.compile("|".join(re.escape(n) for _, _, needles in _PATTERNS for n in needles))


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
    if len(out) < _SHORTEST:
        return out
    index = _known_index()
    if index:
        found = {v for i in range(len(out) - _PREFIX + 1) for v in index.get(out[i:i + _PREFIX], ())}
        for value in sorted(found, key=len, reverse=True):
            out = out.replace(value, MASK)
    found = set(_NEEDLES.findall(out.casefold()))
    if found:  # a substitution only keeps or masks text: it never brings in a needle of a later pattern
        for pattern, repl, needles in _PATTERNS:
            if found.intersection(needles):
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
