"""Microsoft 365 service health (issue 16): Microsoft's own open incidents on the services mailwarden's checks use,
read with each tenant's monitor app beside its sign-in log (Graph ``admin/serviceAnnouncement/issues``,
ServiceHealth.Read.All; M365_FACTS.md, "What Graph can tell about the consuming system") and named in the alerts of
failures that can be Microsoft's (the network and service codes: ``alerts.policy.NETWORK_CODES``).

Stored per tenant in the store's meta (the latest read only: what is open now, when it was read, or why it could not
be read); the alerts read it from there and say nothing when it was never read.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mailwarden.redact import redact

if TYPE_CHECKING:  # pragma: no cover
    from mailwarden.monitor.db import Store
    from mailwarden.monitor.signin_replies import Refusal

# The services whose incidents can break a mailbox integration (Graph's service names)
SERVICES = ("Exchange Online", "Microsoft Entra")
PREFIX = "service_health."
KEPT = 10  # issues kept per tenant (the newest)


def save(store: Store, tenant_id: str, issues: list[dict[str, Any]], refused: Refusal | None, now: datetime) -> None:
    """The latest read of the tenant's service health (a refusal keeps the issues read before, with why)."""
    key = PREFIX + tenant_id.lower()
    if refused is not None:
        before = load(store, tenant_id) or {}
        doc = {**before, "state": refused.state, "detail": redact(refused.detail)[:300], "tried_at": now.isoformat()}
    else:
        mine = [i for i in issues if i.get("service") in SERVICES and not i.get("isResolved")]
        mine.sort(key=lambda i: str(i.get("startDateTime") or ""), reverse=True)
        doc = {"state": "ok", "detail": None, "read_at": now.isoformat(), "tried_at": now.isoformat(),
               "issues": [{"id": str(i.get("id") or "")[:40], "title": str(i.get("title") or "")[:300],
                           "service": i.get("service"), "status": str(i.get("status") or "")[:60],
                           "classification": str(i.get("classification") or "")[:20],
                           "since": str(i.get("startDateTime") or "")[:40]} for i in mine[:KEPT]]}
    store.meta.set_meta(key, json.dumps(doc))


def load(store: Store, tenant_id: str) -> dict[str, Any] | None:
    raw = store.meta.get_meta(PREFIX + tenant_id.lower())
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
