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
            elif k in ("ews_impersonation_denied", "quarantine_senders"):
                v = {str(x).lower() for x in v or []}
            elif k == "smtp_auth_enabled":
                v = None if v is None else bool(v)
            elif k == "load":
                v = model.check_load(v)
            elif k == "budget":
                v = model.check_budget(v)
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
def set_tenant_exchange(state: State, tenant: str, **fields) -> dict:
    """Set-TransportConfig SmtpClientAuthenticationDisabled (smtp_auth_enabled), Set-OrganizationConfig EWSEnabled
    (ews_enabled: true, false, or null for never set), EWSAllowedAppIDs (ews_allowed_app_ids: a list, or null for
    no allow-list), and an outbound spam block (outbound_blocked: tenant, ip or null). Only the fields given change."""
    allowed = {"smtp_auth_enabled", "ews_enabled", "ews_allowed_app_ids", "outbound_blocked"}
    if set(fields) - allowed:
        raise ValueError(f"set_tenant_exchange accepts {sorted(allowed)}")
    with state.lock:
        ex = exchange_of(state, state.require_tenant(tenant).id)
        if "smtp_auth_enabled" in fields and fields["smtp_auth_enabled"] is not None:
            ex.smtp_auth_enabled = bool(fields["smtp_auth_enabled"])
        if "ews_enabled" in fields:
            ex.ews_enabled = None if fields["ews_enabled"] is None else bool(fields["ews_enabled"])
        if "ews_allowed_app_ids" in fields:
            ids = fields["ews_allowed_app_ids"]
            ex.ews_allowed_app_ids = None if ids is None else {str(a).lower() for a in ids}
        if "outbound_blocked" in fields:
            ex.outbound_blocked = model.check_outbound(fields["outbound_blocked"])
        return {"smtp_auth_enabled": ex.smtp_auth_enabled, "ews_enabled": ex.ews_enabled,
                "ews_allowed_app_ids": sorted(ex.ews_allowed_app_ids) if ex.ews_allowed_app_ids is not None
                else None, "outbound_blocked": ex.outbound_blocked}


@op
def use_budget(state: State, address: str, principal: str, requests: int) -> dict:
    """Another client of ``principal`` (a UPN or app id: the consuming system itself) spends ``requests`` of its
    budget on the mailbox now."""
    with state.lock:
        mb = require_mailbox(state, address)
        model.use_budget(state, principal, mb, int(requests))
        return {"address": mb.address, "budget": dict(mb.budget)}


@op
def record_sent(state: State, address: str, recipients: int) -> dict:
    """Another client sent mail from the mailbox to ``recipients`` recipients just now (Exchange Online allows
    10,000 recipients a day per mailbox; past that, 554 5.2.0 SubmissionQuotaExceededException)."""
    import datetime as dt

    with state.lock:
        mb = require_mailbox(state, address)
        state.count_in_window(f"sent:{mb.address.lower()}", dt.timedelta(days=1), add=int(recipients))
        return {"address": mb.address}


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
