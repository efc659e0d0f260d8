"""Hosts per cloud. The same code talks to Microsoft, a national cloud or the sandbox: only this changes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, default_port: int) -> HostPort:
        host, sep, port = text.rpartition(":")
        if not sep:
            return cls(text, default_port)
        return cls(host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Endpoints:
    cloud: str
    authority: str  # without tenant: https://login.microsoftonline.com
    graph: str  # API base: https://graph.microsoft.com/v1.0
    graph_resource: str  # scope prefix: https://graph.microsoft.com
    exchange_resource: str  # app-only scope prefix: https://outlook.office365.com
    exchange_delegated_resource: str  # delegated scope prefix: https://outlook.office.com
    ews: str
    imap: HostPort
    pop: HostPort
    smtp: HostPort
    ca_bundle: str | None = None  # a private CA (the sandbox, a TLS-inspecting proxy)
    # EWS is Exchange Online's (retired on 1 April 2027), not an on-premises Exchange's (not retired)
    exchange_online: bool = True

    def authority_for(self, tenant_id: str) -> str:
        return f"{self.authority.rstrip('/')}/{tenant_id}"

    def token_endpoint(self, tenant_id: str) -> str:
        return f"{self.authority_for(tenant_id)}/oauth2/v2.0/token"

    @property
    def verify(self) -> str | bool:
        """What HTTP clients pass as ``verify``."""
        return self.ca_bundle or True


_CLOUDS: dict[str, dict[str, str]] = {
    "global": dict(
        authority="https://login.microsoftonline.com",
        graph="https://graph.microsoft.com/v1.0",
        graph_resource="https://graph.microsoft.com",
        exchange_resource="https://outlook.office365.com",
        exchange_delegated_resource="https://outlook.office.com",
        ews="https://outlook.office365.com/EWS/Exchange.asmx",
        imap="outlook.office365.com:993",
        pop="outlook.office365.com:995",
        smtp="smtp.office365.com:587",
    ),
    "usgov": dict(
        authority="https://login.microsoftonline.us",
        graph="https://graph.microsoft.us/v1.0",
        graph_resource="https://graph.microsoft.us",
        exchange_resource="https://outlook.office365.us",
        exchange_delegated_resource="https://outlook.office365.us",
        ews="https://outlook.office365.us/EWS/Exchange.asmx",
        imap="outlook.office365.us:993",
        pop="outlook.office365.us:995",
        smtp="smtp.office365.us:587",
    ),
    "china": dict(
        authority="https://login.chinacloudapi.cn",
        graph="https://microsoftgraph.chinacloudapi.cn/v1.0",
        graph_resource="https://microsoftgraph.chinacloudapi.cn",
        exchange_resource="https://partner.outlook.cn",
        exchange_delegated_resource="https://partner.outlook.cn",
        ews="https://partner.outlook.cn/EWS/Exchange.asmx",
        imap="partner.outlook.cn:993",
        pop="partner.outlook.cn:995",
        smtp="smtp.partner.outlook.cn:587",
    ),
}
CLOUDS = tuple(_CLOUDS) + ("custom",)
_ONLINE_HOSTS = (".office365.com", ".office365.us", ".outlook.cn", ".office.com")


def online_host(url: str) -> bool:
    """Whether an EWS URL is Exchange Online's (a Microsoft cloud host) rather than an on-premises server's."""
    host = url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
    return any(host.endswith(suffix) or host == suffix[1:] for suffix in _ONLINE_HOSTS)


def build(cloud: str, custom: dict[str, str | None] | None = None) -> Endpoints:
    """Endpoints of a named cloud; for ``custom``, the given hosts over the global defaults."""
    values: dict[str, str | None] = dict(_CLOUDS["global" if cloud == "custom" else cloud])
    ca_bundle = None
    exchange = None
    if cloud == "custom" and custom:
        ca_bundle = custom.get("ca_bundle")
        exchange = custom.get("exchange")
        values.update({k: v for k, v in custom.items() if v is not None and k not in ("ca_bundle", "exchange")})
    return Endpoints(
        cloud=cloud,
        authority=str(values["authority"]),
        graph=str(values["graph"]).rstrip("/"),
        graph_resource=str(values["graph_resource"]),
        exchange_resource=str(values["exchange_resource"]),
        exchange_delegated_resource=str(values["exchange_delegated_resource"]),
        ews=str(values["ews"]),
        imap=HostPort.parse(str(values["imap"]), 993),
        pop=HostPort.parse(str(values["pop"]), 995),
        smtp=HostPort.parse(str(values["smtp"]), 587),
        ca_bundle=ca_bundle,
        exchange_online=online_host(str(values["ews"])) if exchange is None else exchange == "online",
    )


def scope_prefixes(endpoints: Endpoints, flow: str) -> dict[str, str]:
    """The scope prefix of each resource for a flow: app-only Exchange tokens are for outlook.office365.com,
    delegated ones for outlook.office.com (M365_FACTS.md, "Scopes")."""
    exchange = endpoints.exchange_resource if flow == "app" else endpoints.exchange_delegated_resource
    return {"graph": endpoints.graph_resource, "exchange": exchange}
