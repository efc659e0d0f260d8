"""An app registration's credentials as Graph lists them, and which of them the configured one is: data and pure
functions the checks use (monitor.credentials reads them from Graph)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True)
class AppCredential:
    kind: str  # client_secret | certificate
    key_id: str
    display_name: str | None
    hint: str | None  # secrets: first three characters
    thumbprint: str | None  # certificates: SHA-1, upper hex
    start_at: datetime | None
    end_at: datetime | None


@dataclass
class CredentialRead:
    app: str
    ok: bool
    credentials: list[AppCredential] = field(default_factory=list)
    display_name: str | None = None
    # when not ok: why Graph could not be read
    code: str | None = None
    reason: str | None = None
    retry_after_s: float | None = None
    backoff_target: str | None = None  # the monitor app's target Microsoft asked to wait on (checks.base)


def thumbprint_of(raw: bytes | str | None) -> str | None:
    """Graph types customKeyIdentifier as binary, but for certificates it carries the thumbprint as 40 hex
    characters, which msgraph-sdk base64-decodes into 30 bytes. Undo that; accept the 20 raw bytes too."""
    if not raw:
        return None
    if isinstance(raw, str):
        return raw.upper()
    if len(raw) == 20:
        return bytes(raw).hex().upper()
    text = base64.b64encode(bytes(raw)).decode()
    return text.upper() if re.fullmatch(r"[0-9A-Fa-f]{40}", text) else bytes(raw).hex().upper()


def match(credentials: list[AppCredential], configured: str | dict[str, str]) -> list[AppCredential]:
    """The app's credentials the configured secret (by hint) or certificate (by thumbprint) can be,
    the one ending last first."""
    if isinstance(configured, str):
        found = [c for c in credentials if c.kind == "client_secret" and c.hint == configured[:3]]
    else:
        thumb = configured["thumbprint"].upper()
        found = [c for c in credentials if c.kind == "certificate" and c.thumbprint == thumb]
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(found, key=lambda c: c.end_at or far, reverse=True)
