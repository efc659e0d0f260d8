"""The round-trip ideal: the round trips each check must make on its path, times the latency, divided by the
default concurrency limit, and never below the longest single check (nor below what the per-tenant limit
allows for the busiest tenant).

Counted per kind, only the round trips a check cannot avoid (a token served from cache costs none; a
discovery document fetched again costs one that the ideal does not grant). The sandbox delays every
server reply (each HTTP request; each IMAP/POP/SMTP reply, greeting included) by the latency; it does not
delay the TCP and TLS handshakes on loopback, so those are listed apart (`handshakes`: what a real
network adds) and are not part of the ideal: counting them would make the ideal slower and the ratio
look better than what was measured.
"""

from __future__ import annotations

from mailwarden.checks import permissions

# kind -> (delayed replies the check needs, what they are, handshake round trips on a real network)
PATH = {
    "pop": (5, "greeting, AUTH XOAUTH2 (+), SASL response (+OK), STAT, QUIT", 2),
    "imap": (7, "greeting, CAPABILITY, AUTHENTICATE (+), SASL response (OK), EXAMINE, SEARCH UNSEEN, LOGOUT", 2),
    "smtp": (8, "greeting, EHLO, STARTTLS, EHLO, AUTH XOAUTH2 (334), SASL response (235), NOOP, QUIT", 2),
    "graph_mail": (1, "GET users/{mailbox}/mailFolders/inbox (token from cache)", 2),
    "ews": (1, "POST GetFolder (token from cache)", 2),
    "token": (1, "POST /oauth2/v2.0/token per resource the checks need (always a real round trip)", 2),
    "secret_expiry": (0, "one Graph GET applications(appId=) per app per cycle, shared by its integrations", 0),
}


def per_check(integ, kind: str) -> int:
    """Round trips one check of this integration needs (secret_expiry: counted per app, see cycle_round_trips)."""
    if kind == "token":
        return len(permissions.resources(permissions.needs(integ.flow, list(integ.checks), [])))
    return PATH[kind][0]


def cycle_round_trips(config) -> tuple[int, dict[str, int], dict[str, int], int]:
    """(total, by kind, by tenant, longest single check) of one full cycle."""
    by_kind: dict[str, int] = {}
    by_tenant: dict[str, int] = {}
    apps_read: set[str] = set()
    longest = 0
    for integ in config.integrations:
        tenant = config.apps[integ.app].tenant
        for kind in integ.checks:
            n = per_check(integ, kind)
            if kind == "secret_expiry" and integ.app not in apps_read:
                apps_read.add(integ.app)
                n = 1
            by_kind[kind] = by_kind.get(kind, 0) + n
            by_tenant[tenant] = by_tenant.get(tenant, 0) + n
            longest = max(longest, n)
    return sum(by_kind.values()), by_kind, by_tenant, longest


def ideal_s(config, latency_ms: float) -> dict:
    total, by_kind, by_tenant, longest = cycle_round_trips(config)
    lat = latency_ms / 1000
    conc = config.concurrency
    global_s = total * lat / conc.total
    tenant_s = max(by_tenant.values(), default=0) * lat / conc.per_tenant
    longest_s = longest * lat
    return {"ideal_s": max(global_s, tenant_s, longest_s), "round_trips": total, "by_kind": by_kind,
            "concurrency_total": conc.total, "concurrency_per_tenant": conc.per_tenant,
            "global_bound_s": round(global_s, 3), "busiest_tenant_bound_s": round(tenant_s, 3),
            "longest_check_s": round(longest_s, 3)}
