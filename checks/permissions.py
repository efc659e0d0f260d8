"""The permissions an integration's token must carry: what its checks declare (``Check.needs``, per flow), which
the token check compares with the token's claims.

Each requirement is a tuple of alternatives (any one satisfies it), the one a fix names first. No alternative is
weaker than what the consuming system needs: a Graph consumer (the Sinch kind) reads and writes mail, so a token
with Mail.Read or Mail.ReadBasic.All alone would turn mailwarden green while that system still lacks Mail.ReadWrite.
Resources are named, not URIs: the URI depends on the cloud (monitor.endpoints).

Where an admin adds a permission is not where its token goes: Entra's "API permissions" lists the delegated
IMAP/POP/SMTP/EWS scopes under Microsoft Graph (their tokens are for Exchange), and the mail protocols' and EWS's
application roles under APIs my organization uses > Office 365 Exchange Online (Microsoft's "Authenticate an IMAP,
POP or SMTP connection using OAuth" and EWS OAuth pages; the seeds' guides say the same). ``portal_path`` says it.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailwarden import checks

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

    @property
    def grant(self) -> str:
        """The permission a fix tells the admin to add: the first alternative, never a weaker one."""
        return self.any_of[0]


def of_kind(flow: str, kind: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """What a check of ``kind`` declares it needs in ``flow`` (its ``needs``); nothing for an unknown kind."""
    if kind not in checks.REGISTRY:  # read when asked: the registry loads a kind's module on first use
        return ()
    return next((tuple(found) for f, found in checks.REGISTRY[kind].needs.items() if f == flow), ())


def needs(flow: str, check_kinds: list[str] | tuple[str, ...], require: list[str] | tuple[str, ...] = ()) -> list[Need]:
    """What an integration's token must carry: what its checks declare (``Check.needs``), plus explicit
    "resource:Name" entries."""
    out: list[Need] = []
    for kind in check_kinds:
        for resource, alternatives in of_kind(flow, kind):
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


MICROSOFT_GRAPH = "Microsoft Graph"
EXCHANGE_ONLINE = "Office 365 Exchange Online"
# Delegated scopes of the mail protocols and EWS that Entra lists under Microsoft Graph (see the module docstring)
_LISTED_UNDER_GRAPH = frozenset({"IMAP.AccessAsUser.All", "POP.AccessAsUser.All", "SMTP.Send", "EWS.AccessAsUser.All"})


def api_of(resource: str, name: str, flow: str) -> str:
    """The API an admin picks in Add a permission for ``name``: Microsoft Graph or Office 365 Exchange Online."""
    if resource == GRAPH or (flow != "app" and name in _LISTED_UNDER_GRAPH):
        return MICROSOFT_GRAPH
    return EXCHANGE_ONLINE


def portal_path(resource: str, name: str, flow: str) -> str:
    """Add a permission > ... > the permission, with the API and the permission type (Application for app-only,
    Delegated for a signed-in user)."""
    api = api_of(resource, name, flow)
    where = MICROSOFT_GRAPH if api == MICROSOFT_GRAPH else f"APIs my organization uses > {EXCHANGE_ONLINE}"
    kind = "Application permissions" if flow == "app" else "Delegated permissions"
    return f"{where} > {kind} > {name}"


def find(flow: str, check_kinds: list[str] | tuple[str, ...], require: list[str] | tuple[str, ...],
         label: str) -> Need | None:
    """The need of an integration whose ``label`` a token check named (its result's ``permission``)."""
    return next((n for n in needs(flow, check_kinds, require) if n.label == label), None)
