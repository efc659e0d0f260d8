"""Which permission each check needs, by flow: the token check compares these with the token's claims.

Each requirement is a tuple of alternatives (any one satisfies it). Resources are named, not URIs:
the URI depends on the cloud (monitor.endpoints).
"""

from __future__ import annotations

from dataclasses import dataclass

GRAPH = "graph"
EXCHANGE = "exchange"
REQUIRED = "require"  # Need.why of an explicit checks.token.require entry


@dataclass(frozen=True)
class Need:
    resource: str  # GRAPH | EXCHANGE
    any_of: tuple[str, ...]
    why: str  # the check that needs it

    @property
    def label(self) -> str:
        return " or ".join(self.any_of)


_APP: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "imap": [(EXCHANGE, ("IMAP.AccessAsApp",))],
    "pop": [(EXCHANGE, ("POP.AccessAsApp",))],
    "smtp": [(EXCHANGE, ("SMTP.SendAsApp",))],
    "ews": [(EXCHANGE, ("full_access_as_app",))],
    "graph_mail": [(GRAPH, ("Mail.Read", "Mail.ReadBasic.All", "Mail.ReadWrite"))],
}
_DELEGATED: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "imap": [(EXCHANGE, ("IMAP.AccessAsUser.All",))],
    "pop": [(EXCHANGE, ("POP.AccessAsUser.All",))],
    "smtp": [(EXCHANGE, ("SMTP.Send",))],
    "ews": [(EXCHANGE, ("EWS.AccessAsUser.All",))],
    "graph_mail": [(GRAPH, ("Mail.Read.Shared", "Mail.Read", "Mail.ReadWrite", "Mail.ReadWrite.Shared"))],
}


def needs(flow: str, check_kinds: list[str] | tuple[str, ...], require: list[str] | tuple[str, ...] = ()) -> list[Need]:
    """What an integration's token must carry: from its checks, plus explicit "resource:Name" entries."""
    table = _APP if flow == "app" else _DELEGATED
    out: list[Need] = []
    for kind in check_kinds:
        for resource, alternatives in table.get(kind, []):
            out.append(Need(resource, alternatives, kind))
    for item in require:
        resource, _, name = item.partition(":")
        out.append(Need(resource, (name,), REQUIRED))
    return out


def resources(found: list[Need]) -> list[str]:
    """The resources an integration's token check must get a token for (Exchange when none is named:
    every system in the seeds but the Graph one reads mail through Exchange)."""
    return sorted({n.resource for n in found}) or [EXCHANGE]


def delegated_scopes(scope_prefix: dict[str, str], found: list[Need]) -> list[str]:
    """Full delegated scope URIs to request (the first alternative of each need)."""
    scopes: list[str] = []
    for n in found:
        scope = f"{scope_prefix[n.resource]}/{n.any_of[0]}"
        if scope not in scopes:
            scopes.append(scope)
    return scopes
