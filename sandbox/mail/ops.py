"""Control ops for the Exchange side (registered in `sandbox.ops.OPS`)."""

from __future__ import annotations

from ..ops import op
from ..state import State
from . import model
from .model import FAULT_MODES, PATCHABLE, PROTOCOLS, exchange_of, require_mailbox

PERMISSIONS = ("full_access", "send_as")


@op
def add_mailbox(state: State, tenant: str, **spec) -> dict:
    mb = model.add_mailbox(state, state.require_tenant(tenant).id, spec)
    return model.mailbox_json(mb)


@op
def patch_mailbox(state: State, address: str, **fields) -> dict:
    bad = set(fields) - PATCHABLE
    if bad:
        raise ValueError(f"patch_mailbox accepts {sorted(PATCHABLE)}")
    with state.lock:
        mb = require_mailbox(state, address)
        for k, v in fields.items():
            if k == "owner":
                v = v.lower() if v else None
            elif k == "ews_impersonation_denied":
                v = {str(x).lower() for x in v or []}
            elif k == "smtp_auth_enabled":
                v = None if v is None else bool(v)
            elif k != "display_name" and k != "type":
                v = bool(v)
            setattr(mb, k, v)
        return model.mailbox_json(mb)


@op
def delete_mailbox(state: State, address: str) -> dict:
    with state.lock:
        mb = require_mailbox(state, address)
        del exchange_of(state, mb.tenant_id).mailboxes[mb.address.lower()]
    return {"deleted": address}


def _perm(permission: str) -> str:
    if permission not in PERMISSIONS:
        raise ValueError(f"permission must be one of {PERMISSIONS}")
    return permission


@op
def grant_mailbox_permission(state: State, address: str, permission: str, trustee: str) -> dict:
    """Add-MailboxPermission (full_access) / Add-RecipientPermission (send_as); trustee: UPN or app id."""
    with state.lock:
        mb = require_mailbox(state, address)
        getattr(mb, _perm(permission)).add(trustee.lower())
        return model.mailbox_json(mb)


@op
def revoke_mailbox_permission(state: State, address: str, permission: str, trustee: str) -> dict:
    with state.lock:
        mb = require_mailbox(state, address)
        getattr(mb, _perm(permission)).discard(trustee.lower())
        return model.mailbox_json(mb)


@op
def add_service_principal(state: State, tenant: str, app_id: str) -> dict:
    """New-ServicePrincipal in Exchange Online for the app."""
    with state.lock:
        ex = exchange_of(state, state.require_tenant(tenant).id)
        ex.service_principals.add(app_id.lower())
        return {"service_principals": sorted(ex.service_principals)}


@op
def remove_service_principal(state: State, tenant: str, app_id: str) -> dict:
    with state.lock:
        ex = exchange_of(state, state.require_tenant(tenant).id)
        ex.service_principals.discard(app_id.lower())
        return {"service_principals": sorted(ex.service_principals)}


@op
def set_tenant_exchange(state: State, tenant: str, smtp_auth_enabled: bool | None = None,
                        ews_enabled: bool | None = None) -> dict:
    with state.lock:
        ex = exchange_of(state, state.require_tenant(tenant).id)
        if smtp_auth_enabled is not None:
            ex.smtp_auth_enabled = bool(smtp_auth_enabled)
        if ews_enabled is not None:
            ex.ews_enabled = bool(ews_enabled)
        return {"smtp_auth_enabled": ex.smtp_auth_enabled, "ews_enabled": ex.ews_enabled}


@op
def add_access_policy(state: State, tenant: str, app_id: str, access_right: str,
                      members: list[str] | None = None) -> dict:
    """New-ApplicationAccessPolicy (members: mailbox addresses, the group's expanded membership)."""
    with state.lock:
        ex = exchange_of(state, state.require_tenant(tenant).id)
        p = model.add_policy(ex, app_id=app_id, access_right=access_right, members=members)
        return {"id": p.id}


@op
def remove_access_policy(state: State, tenant: str, id: str | None = None,  # noqa: A002
                         app_id: str | None = None) -> dict:
    with state.lock:
        ex = exchange_of(state, state.require_tenant(tenant).id)
        before = len(ex.access_policies)
        ex.access_policies = [p for p in ex.access_policies
                              if not ((id and p.id == id) or (app_id and p.app_id == app_id.lower()))]
        return {"removed": before - len(ex.access_policies)}


@op
def add_message(state: State, address: str, subject: str = "(no subject)", received: str = "-1m",
                seen: bool = False, body: str = "", **extra) -> dict:
    sender = extra.pop("from", None) or extra.pop("sender", None) or "sender@example.com"
    if extra:
        raise ValueError(f"unknown message fields: {sorted(extra)}")
    with state.lock:
        mb = require_mailbox(state, address)
        m = model.add_message_spec(state, mb, {"subject": subject, "from": sender, "received": received,
                                               "seen": seen, "body": body})
        return {"uid": m.uid, "id": m.id, "received": m.received.isoformat()}


@op
def mark_all_seen(state: State, address: str, seen: bool = True) -> dict:
    with state.lock:
        mb = require_mailbox(state, address)
        for m in mb.messages:
            m.seen = bool(seen)
        return {"address": mb.address, "messages": len(mb.messages)}


@op
def set_protocol_fault(state: State, protocol: str, mode: str = "none", latency_ms: int = 0) -> dict:
    """hang: accept the TCP connection and never answer (no TLS handshake, no greeting);
    latency: every reply (greeting included) waits latency_ms."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}")
    if mode not in FAULT_MODES:
        raise ValueError(f"mode must be one of {FAULT_MODES}")
    with state.lock:
        state.protocol_faults[protocol] = {"mode": mode, "latency_ms": int(latency_ms or 0)}
        return {protocol: state.protocol_faults[protocol]}


@op
def get_mailbox(state: State, address: str) -> dict:
    with state.lock:
        return model.mailbox_json(require_mailbox(state, address))
