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
# Known values are found through their substrings of _PREFIX characters (grams). redact() runs several times per
# check (log fields, transcript lines) while hundreds of secrets are known: looking up the text's grams is
# O(len(text)), testing every secret was O(secrets). A value of length L found at position q of the text holds the
# gram starting at the first multiple p of a stride s at or after q whenever L >= s + _PREFIX - 1 (p - q < s), so
# the text's grams are looked up at every s-th position only, and each value indexed by its grams at offsets
# 0 .. s-1: values of _LONG characters or more with s = _STRIDE, shorter ones (6 to 20 characters, rare) with the
# largest stride their shortest allows. A hit is a candidate; the text is compared with the value where it would
# start. (Every position with the first gram alone cost about 10 % of a mailbox check's CPU; bench/.)
_PREFIX = 6
_STRIDE = 16
_LONG = _STRIDE + _PREFIX - 1
# The index grows with each value registered (rebuilding it at every registration, a refresh token's included, made
# cycle 1 of bench/ collect garbage 61 times): the long values' grams in one dict, added to in place under _lock (a
# redaction reading it meanwhile sees the value or not yet); the short values' (stride, grams), rebuilt when one is
# added (their stride depends on the shortest).
_long: dict[str, list[tuple[str, int]]] = {}
_short: tuple[int, dict[str, list[tuple[str, int]]]] | None = None

_SHORTEST = _PREFIX  # shorter text holds no known secret and matches no pattern (the shortest: "?code=x")
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
    global _short
    if value and len(value) >= _PREFIX:
        with _lock:
            if value in _known:
                return
            _known.add(value)
            if len(value) >= _LONG:
                _add_grams(_long, value, _STRIDE)
            else:
                shorts = [v for v in _known if len(v) < _LONG]
                stride = min(len(v) for v in shorts) - _PREFIX + 1
                grams: dict[str, list[tuple[str, int]]] = {}
                for v in shorts:
                    _add_grams(grams, v, stride)
                _short = (stride, grams)


def _add_grams(grams: dict[str, list[tuple[str, int]]], value: str, stride: int) -> None:
    for offset in range(stride):
        grams.setdefault(value[offset:offset + _PREFIX], []).append((value, offset))


def _known_in(text: str) -> set[str]:
    """The known values that occur in ``text``."""
    found: set[str] = set()
    last = len(text) - _PREFIX + 1
    short = _short
    for stride, grams in ((_STRIDE, _long), short) if short is not None else ((_STRIDE, _long),):
        for p in range(0, last, stride):
            hits = grams.get(text[p:p + _PREFIX])
            if hits:
                for value, offset in hits:
                    if p >= offset and text.startswith(value, p - offset):
                        found.add(value)
    return found


def redact(text: Any) -> str:
    if text is None:
        return ""
    out = str(text)
    if len(out) < _SHORTEST:
        return out
    # longest first (a value inside a longer one goes with it), then in a fixed order: two values of one length that
    # overlap in the text mask the same span whatever order they were found in
    for value in sorted(_known_in(out), key=lambda v: (-len(v), v)):
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
