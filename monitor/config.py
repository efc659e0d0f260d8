"""The configuration users write (YAML), validated by pydantic v2. Unknown keys are rejected.

Every problem is reported at once with its key path (``integrations[2].mailbox``) and YAML line.
Secrets are never in the file: ``env:NAME`` or ``file:PATH`` references, resolved only when used
(``resolve_ref``), so an unset variable breaks only the integrations that use it.

What ``validate`` accepts, ``serve`` can run: durations, counts of days and ports are bounded (an interval of
10^11 days overflowed the scheduler), the YAML loader limits aliases and nesting (``monitor.yamlpos``), and the
configuration file and every ``file:`` reference are read only when they are regular files of bounded size
(``read_capped``): a FIFO, ``/dev/zero`` or a non-UTF-8 file is a clear error naming the reference, never a hang,
a MemoryError or a traceback, and never showing the file's content.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mailwarden import endpoints as _endpoints
from mailwarden.errors import ConfigError, SecretReferenceError
from mailwarden.monitor import yamlpos
from mailwarden.redact import register_secret

DEFAULT_CONFIG = "mailwarden.yaml"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_REF = re.compile(r"^(env|file):(.+)$")


from mailwarden.durations import Duration, parse_duration  # noqa: E402,F401 - the kernel's, re-exported


def _check_ref(value: str) -> str:
    if not _REF.match(value):
        raise ValueError("a secret is given by reference, 'env:NAME' or 'file:PATH', never inline")
    return value


SecretRef = Annotated[str, BeforeValidator(lambda v: _check_ref(str(v)))]

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
MAX_DAYS = 3650  # a count of days (warnings, retention, rotation stages): ten years


def _shown(seconds: float) -> str:
    for unit, size in (("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{seconds / size:g}{unit}"
    return f"{seconds * 1000:g}ms"


def _between(low: float, high: float) -> AfterValidator:
    def check(seconds: float) -> float:
        if not low <= seconds <= high:  # also NaN and infinity
            raise ValueError(f"must be between {_shown(low)} and {_shown(high)}")
        return seconds
    return AfterValidator(check)


def _duration(value: Any) -> float:
    try:
        return parse_duration(value)
    except OverflowError:  # an integer of hundreds of digits: no float holds it
        raise ValueError("is far too large (use e.g. 30s, 5m, 1h, 2d)") from None


def _bounded(low: float, high: float) -> Any:
    """A duration (``Duration``) within [low, high] seconds: beyond it the scheduler, a socket or a timestamp
    cannot take it (``serve`` crashed on an interval of 10^11 days that ``validate`` accepted)."""
    return Annotated[float, BeforeValidator(_duration), _between(low, high)]


Interval = _bounded(1.0, 31 * DAY)  # how often a check runs
Timeout = _bounded(0.01, HOUR)  # one network conversation
Window = _bounded(1.0, 31 * DAY)  # flapping, correlation
Lifetime = _bounded(1.0, 366 * DAY)  # sessions, links, reminders, maintenance windows
Wait = _bounded(0.001, DAY)  # a grace period, a retry's first backoff, how long to wait for others
Refresh = _bounded(1.0, DAY)  # how often a page reloads itself
Days = Annotated[int, Field(ge=0, le=MAX_DAYS)]


def _port_ok(port: int | None) -> bool:
    return port is None or 1 <= port <= 65535


def _url_port(url: str | None) -> str | None:
    """``url`` when its port (if any) is 1-65535; raises ValueError saying so otherwise (never echoing the URL,
    which may hold a password)."""
    if url is None:
        return url
    from urllib.parse import urlsplit

    try:
        port = urlsplit(url).port
    except ValueError:
        port = -1
    if not _port_ok(port):
        raise ValueError("its port must be a number from 1 to 65535")
    return url


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Defaults(_Model):
    interval: Interval = 300.0
    timeout: Timeout = 30.0
    failure_threshold: int = Field(2, ge=1, le=10_000)
    success_threshold: int = Field(1, ge=1, le=10_000)
    expiry_warning_days: int = Field(30, ge=0, le=MAX_DAYS)
    # how long a refusal of a client secret that Graph shows as just added counts as replication, not failure
    replication_grace: Wait = 300.0


class CustomEndpoints(_Model):
    authority: str
    graph: str
    ews: str | None = None
    imap: str | None = None
    pop: str | None = None
    smtp: str | None = None
    ca_bundle: str | None = None
    graph_resource: str | None = None
    exchange_resource: str | None = None
    exchange_delegated_resource: str | None = None
    # whose Exchange answers: "online" (Exchange Online, or a stand-in for it: EWS retires on 1 April 2027) or
    # "on_premises" (EWS not retired). Default: read from the EWS host (Microsoft's cloud hosts are online).
    exchange: Literal["online", "on_premises"] | None = None

    @field_validator("authority", "graph", "ews")
    @classmethod
    def _https(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("https://"):
            raise ValueError("must be an https:// URL (MSAL refuses other authorities)")
        return _url_port(v)

    @field_validator("imap", "pop", "smtp")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        # as endpoints.HostPort.parse reads it: after the last ':' a port (HOST:PORT, [::1]:PORT), else the protocol's
        if v is not None and ":" in v:
            port = v.rpartition(":")[2]
            if not port.isascii() or not port.isdigit() or not _port_ok(int(port)):
                raise ValueError("must be HOST or HOST:PORT (an IPv6 address as [::1]:993), the port from 1 to 65535")
        return v


class RetentionConfig(_Model):
    """Bounded history: raw results capped per check, hourly rollups for uptime and latency."""

    raw_per_check: int = Field(200, ge=10, le=1_000_000)  # newest raw results kept per (integration, check)
    failures_days: int = Field(30, ge=0, le=MAX_DAYS)  # non-ok raw results are kept this long even beyond the cap
    rollup_days: int = Field(90, ge=31, le=MAX_DAYS)  # hourly rollups (uptime bars go back 30 days)


class WebConfig(_Model):
    """The status web app. It starts only with an access rule: ``auth: password`` (the default once
    ``password_hash`` is set), ``auth: proxy`` (a trusted reverse proxy names the user in
    ``proxy_header``), or ``auth: none`` written out explicitly."""

    enabled: bool = True
    listen: str = "127.0.0.1:8080"
    base_url: str = "http://127.0.0.1:8080"
    auth: Literal["password", "proxy", "none"] | None = None
    admin_user: str = "admin"
    password_hash: str | None = None  # `mailwarden web hash-password`; or env:NAME / file:PATH holding it
    proxy_header: str | None = None  # e.g. X-Forwarded-User, set by the proxy after its own login
    # addresses or networks (CIDR) of reverse proxies: their X-Forwarded-For names the client (rate limits, the
    # log, the audit) and, with auth: proxy, their proxy_header names the user
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    # Host names the app answers to besides base_url's host, the listen host and loopback (DNS rebinding):
    # e.g. the name Prometheus scrapes each instance by; "*.example.com" patterns; no ports
    allowed_hosts: list[str] = Field(default_factory=list)
    session_key: SecretRef | None = None  # signs session cookies; default: random per start (logins reset)
    session_max_age: Lifetime = 12 * 3600.0  # absolute: a session ends this long after sign-in
    refresh: Refresh = 60.0  # the pages reload themselves this often
    public_metrics: bool = False  # /metrics without login (Prometheus may also use basic auth)
    reauth_link_ttl: Lifetime = 7 * 86400.0  # how long a reauthorisation link in an alert stays valid
    retention: RetentionConfig = Field(default_factory=RetentionConfig)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, _, port = v.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8080 (or [::1]:8080)")
        return v

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed_hosts(cls, v: list[str]) -> list[str]:
        for host in v:
            if not re.fullmatch(r"(\*\.)?[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+", host):
                raise ValueError(f"{host!r}: a host name or address without a port (or *.example.com); '*' alone "
                                 "would let any site's name in")
        return v

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, v: list[str]) -> list[str]:
        if "*" in v:
            raise ValueError("'*' would let anyone name the client and the user: list the proxies' addresses or "
                             "networks (CIDR)")
        return v

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be the URL people open, e.g. https://mailwarden.contoso.com")
        return _url_port(v.rstrip("/"))

    @model_validator(mode="after")
    def _auth_complete(self) -> WebConfig:
        if self.auth == "password" and not self.password_hash:
            raise ValueError("auth: password needs password_hash (create one with `mailwarden web hash-password`)")
        if self.auth == "proxy" and not self.proxy_header:
            raise ValueError("auth: proxy needs proxy_header: the header your reverse proxy sets to the user")
        return self

    def auth_mode(self) -> str | None:
        """The access rule in force, or None when none is configured (then the web app does not start)."""
        if self.auth:
            return self.auth
        if self.password_hash:
            return "password"
        if self.proxy_header:
            return "proxy"
        return None

    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class Concurrency(_Model):
    total: int = Field(20, ge=1, le=1000)
    per_tenant: int = Field(5, ge=1, le=1000)


class TenantConfig(_Model):
    tenant_id: str
    monitor_app: str | None = None  # app with Application.Read.All that reads every app's credentials

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, v: str) -> str:
        if not (_GUID.match(v) or re.match(r"^[A-Za-z0-9.-]+\.[A-Za-z]{2,}$", v)):
            raise ValueError("must be the directory (tenant) ID, a GUID, or a verified domain")
        return v


class CertificateConfig(_Model):
    key: SecretRef  # PEM private key
    cert: SecretRef  # PEM certificate (its SHA-1 thumbprint is sent as x5t)


DEFAULT_REMINDER_DAYS = (60, 30, 14, 7, 3, 1, 0)  # 0: on expiry


class RotationConfig(_Model):
    """Rotation of an app's client secret. ``automated`` is opt-in: the tenant's monitor_app then needs
    Application.ReadWrite.OwnedBy and to be an owner of this app (or Application.ReadWrite.All)."""

    automated: bool = False
    start_days: int = Field(30, ge=1, le=MAX_DAYS)  # automated: start when the secret in use has this many days left
    lifetime_days: int = Field(180, ge=1, le=730)  # automated: the new secret's lifetime (portal cap: 24 months)
    hook_command: list[str] | None = None  # argv of a command that reads the new secret on stdin
    hook_url: str | None = None  # HTTPS webhook: POST JSON {app, client_id, key_id, end, secret}
    hook_timeout: Timeout = 60.0
    remove_old_after_days: int = Field(7, ge=0, le=MAX_DAYS)  # the new secret has worked this long: remove the old one

    @field_validator("hook_url")
    @classmethod
    def _https_hook(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("https://"):
            raise ValueError("the hook receives a secret: it must be an https:// URL")
        return _url_port(v)


class AppConfig(_Model):
    tenant: str
    client_id: str
    secret: SecretRef | None = None
    certificate: CertificateConfig | None = None
    secret_expires_on: date | None = None  # used only when Graph cannot be read
    display_name: str | None = None
    public_client: bool = False  # "Allow public client flows" is on: `reauth --device-code` may be used
    reminder_days: list[Days] = Field(default_factory=lambda: list(DEFAULT_REMINDER_DAYS))  # expiry reminder stages
    rotation: RotationConfig = Field(default_factory=RotationConfig)

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, v: str) -> str:
        if not _GUID.match(v):
            raise ValueError("must be the Application (client) ID, a GUID, from the app's Overview page")
        return v.lower()

    @model_validator(mode="after")
    def _one_credential(self) -> AppConfig:
        if (self.secret is None) == (self.certificate is None):
            raise ValueError("give exactly one of 'secret' or 'certificate'")
        if any(d < 0 for d in self.reminder_days):
            raise ValueError("reminder_days are days before expiry (0: on expiry), never negative")
        if self.rotation.automated and not (self.secret or "").startswith("file:"):
            raise ValueError("rotation.automated needs a writable 'secret: file:PATH' reference "
                             "(mailwarden writes the new secret there)")
        return self


class IntegrationConfig(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    app: str
    flow: Literal["app", "delegated"]
    mailbox: str
    account: str | None = None
    system: str | None = None  # the consuming system, named in runbooks
    checks: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"token": {}, "secret_expiry": {}})
    owners: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    interval: Interval | None = None
    timeout: Timeout | None = None
    failure_threshold: int | None = Field(None, ge=1, le=10_000)
    success_threshold: int | None = Field(None, ge=1, le=10_000)
    expiry_warning_days: int | None = Field(None, ge=0, le=MAX_DAYS)
    secret_field: str | None = None  # where the consuming system takes its secret
    reauth_after_rotation: bool = False
    paused: bool = False

    @field_validator("checks", mode="before")
    @classmethod
    def _checks_shape(cls, v: Any) -> Any:
        if isinstance(v, list):
            return {str(k): {} for k in v}
        if isinstance(v, dict):
            return {k: ({} if opts is None else opts) for k, opts in v.items()}
        return v

    @field_validator("mailbox", "account")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None and not _EMAIL.match(v):
            raise ValueError("must be an e-mail address (user@domain)")
        return v.lower() if v else v

    @model_validator(mode="after")
    def _delegated_account(self) -> IntegrationConfig:
        if self.flow == "delegated" and not self.account:
            raise ValueError("a delegated integration needs 'account': the user who signs in")
        if self.flow == "app" and self.account:
            raise ValueError("'account' is only for flow: delegated (app-only has no signed-in user)")
        return self


class RouteConfig(_Model):
    """Where notices go: Apprise URLs, or an Apprise YAML/TEXT config file; filters choose what it gets.

    A route receives a notice when every filter it sets matches (no filter: everything). A ``default``
    route receives only what no other configured route took."""

    name: str | None = None  # shown in Notification rows and `alerts test --route`; default routes[i]
    url: str | None = None
    urls: list[str] = Field(default_factory=list)
    config: str | None = None  # path to an Apprise YAML/TEXT config file
    tags: list[str] = Field(default_factory=list)  # integration tags (any of)
    severity: list[Literal["critical", "warning", "info"]] = Field(default_factory=list)
    checks: list[str] = Field(default_factory=list)  # check kinds (any of)
    default: bool = False
    timeout: Timeout | None = None  # each service: connect and answer (Apprise's cto and rto); None: Apprise's 4 s

    @model_validator(mode="after")
    def _one_target(self) -> RouteConfig:
        if not (self.url or self.urls or self.config):
            raise ValueError("a route needs 'url', 'urls' or 'config' (an Apprise config file)")
        return self

    def all_urls(self) -> list[str]:
        return ([self.url] if self.url else []) + list(self.urls)


class MaintenanceWindow(_Model):
    """One-off (start/end) or recurring (cron + duration, in ``timezone``). Scope: all integrations, or
    the named ones / those with one of the tags."""

    name: str
    start: datetime | None = None
    end: datetime | None = None
    cron: str | None = None  # standard 5-field crontab, e.g. "0 22 * * tue"
    duration: Lifetime | None = None
    timezone: str = "UTC"
    integrations: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shape(self) -> MaintenanceWindow:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r} (use an IANA name, e.g. Europe/Berlin)") from None
        if self.cron:
            if self.start or self.end or not self.duration:
                raise ValueError("a recurring window takes 'cron' and 'duration' (not start/end)")
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(self.cron, timezone=self.timezone)
            except ValueError as exc:
                raise ValueError(f"invalid cron expression {self.cron!r}: {exc}") from None
        elif not (self.start and self.end) or self.end <= self.start:
            raise ValueError("a one-off window needs 'start' before 'end' (or 'cron' and 'duration')")
        return self


class FlappingConfig(_Model):
    transitions: int = Field(4, ge=2, le=1000)  # this many state changes of one check within `window`...
    window: Window = 3600.0  # ...is flapping; quiet until no change for `window`


class CorrelationConfig(_Model):
    window: Wait = 300.0  # network/IdP failures wait this long for others before alerting alone
    min_integrations: int = Field(2, ge=2, le=100_000)


class AlertsConfig(_Model):
    owner_route: str | None = None  # Apprise URL template with {owner}, e.g. mailto://relay?to={owner}
    routes: list[RouteConfig] = Field(default_factory=list)
    reminder_interval: Lifetime = 4 * 3600.0
    max_attempts: int = Field(6, ge=1, le=1000)  # per delivery, then permanent
    retry_backoff: Wait = 30.0  # first retry delay; doubles each attempt, capped at 1 h
    heartbeat_url: str | None = None  # dead-man switch: GET after every dispatch cycle
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    flapping: FlappingConfig = Field(default_factory=FlappingConfig)
    correlation: CorrelationConfig = Field(default_factory=CorrelationConfig)
    enabled: bool | None = None  # default: on when a route, owner_route or heartbeat_url is set

    @field_validator("heartbeat_url")
    @classmethod
    def _heartbeat_port(cls, v: str | None) -> str | None:
        return _url_port(v)

    def active(self) -> bool:
        if self.enabled is not None:
            return self.enabled
        return bool(self.routes or self.owner_route or self.heartbeat_url)


PollEvery = _bounded(MINUTE, DAY)  # how often a log is read
Overlap = _bounded(1.0, 7 * DAY)
LogDays = _bounded(DAY, 30 * DAY)  # what is kept of a log Entra ID keeps 30 days
LogSpan = _bounded(1.0, 30 * DAY)


class SignInEvidenceConfig(_Model):
    """Reading the consuming systems' own sign-ins from Entra ID's sign-in log (Graph beta ``auditLogs/signIns``),
    through each tenant's ``monitor_app`` (AuditLog.Read.All and Directory.Read.All; the tenant needs Entra ID P1 or
    P2). One request per tenant, event type and app per poll, whatever the number of integrations."""

    enabled: bool | None = None  # default: on for every tenant with a monitor_app
    poll_every: PollEvery = 5 * MINUTE
    overlap: Overlap = 45 * MINUTE  # each poll reads again this far back: non-interactive logs come ~30 min late
    keep: LogDays = 14 * DAY  # Entra ID itself keeps 30 days
    backfill: LogSpan = DAY  # how far back the first poll reads

    @model_validator(mode="after")
    def _windows(self) -> SignInEvidenceConfig:
        if self.overlap >= self.keep:
            raise ValueError(f"overlap ({_shown(self.overlap)}) must be shorter than keep ({_shown(self.keep)})")
        if self.backfill > self.keep:
            raise ValueError(f"backfill ({_shown(self.backfill)}) reads more than keep ({_shown(self.keep)}) "
                             "would hold: make it at most keep")
        return self


class EvidenceConfig(_Model):
    """What Microsoft records about the consuming systems themselves (issue 16)."""

    signins: SignInEvidenceConfig = Field(default_factory=SignInEvidenceConfig)


class Config(_Model):
    database: str = "sqlite:///mailwarden.db"
    token_key: SecretRef | None = None
    cloud: Literal["global", "usgov", "china", "custom"] = "global"
    endpoints: CustomEndpoints | None = None
    web: WebConfig = Field(default_factory=WebConfig)
    defaults: Defaults = Field(default_factory=Defaults)
    concurrency: Concurrency = Field(default_factory=Concurrency)
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    apps: dict[str, AppConfig] = Field(default_factory=dict)
    integrations: list[IntegrationConfig] = Field(default_factory=list)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Set by load(): the directory relative paths are resolved against.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    # -- lookups -----------------------------------------------------------------------------
    def integration(self, name: str) -> IntegrationConfig:
        for integ in self.integrations:
            if integ.name == name:
                return integ
        raise KeyError(name)

    def app_of(self, integ: IntegrationConfig) -> AppConfig:
        return self.apps[integ.app]

    def tenant_of(self, app: AppConfig) -> TenantConfig:
        return self.tenants[app.tenant]

    def endpoints_resolved(self) -> _endpoints.Endpoints:
        custom = self.endpoints.model_dump() if self.endpoints else None
        if custom and custom.get("ca_bundle"):
            custom["ca_bundle"] = str(self.path(custom["ca_bundle"]))
        return _endpoints.build(self.cloud, custom)

    def path(self, p: str | Path) -> Path:
        p = Path(p).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def database_url(self) -> str:
        if self.database.startswith("sqlite:///") and not self.database.startswith("sqlite:////"):
            rel = self.database[len("sqlite:///"):]
            if rel and rel != ":memory:":
                return "sqlite:///" + str(self.path(rel))
        return self.database

    def signins_enabled(self, tenant: str) -> bool:
        """Whether the sign-in log of the tenant (its name in ``tenants``) is read: it has a monitor_app and
        ``evidence.signins.enabled`` is not false."""
        t = self.tenants.get(tenant)
        return bool(t and t.monitor_app) and self.evidence.signins.enabled is not False

    def threshold(self, integ: IntegrationConfig, name: str) -> Any:
        own = getattr(integ, name)
        return own if own is not None else getattr(self.defaults, name)

    @field_validator("database")
    @classmethod
    def _database_port(cls, v: str) -> str:
        return v if v.startswith("sqlite") else _url_port(v) or v

    # -- cross-references ----------------------------------------------------------------------
    @model_validator(mode="after")
    def _cross_refs(self) -> Config:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.cloud == "custom" and self.endpoints is None:
            problems.append((("endpoints",), "cloud: custom needs an 'endpoints' section"))
        if self.cloud != "custom" and self.endpoints is not None:
            problems.append((("endpoints",), f"'endpoints' is only used with cloud: custom (cloud is {self.cloud})"))
        for name, tenant in self.tenants.items():
            if tenant.monitor_app and tenant.monitor_app not in self.apps:
                problems.append((("tenants", name, "monitor_app"), f"no app named {tenant.monitor_app!r}"))
        if self.evidence.signins.enabled and self.tenants and not any(t.monitor_app for t in self.tenants.values()):
            problems.append((("evidence", "signins", "enabled"),
                             "sign-in evidence is read with a tenant's monitor_app, and no tenant names one: set "
                             "tenants.<name>.monitor_app to an app with AuditLog.Read.All and Directory.Read.All"))
        for name, app in self.apps.items():
            if app.tenant not in self.tenants:
                problems.append((("apps", name, "tenant"), f"no tenant named {app.tenant!r}"))
        seen: dict[str, int] = {}
        from mailwarden.checks import REGISTRY  # late: the registry imports this module's types

        for i, integ in enumerate(self.integrations):
            if integ.name in seen:
                problems.append((("integrations", i, "name"),
                                 f"duplicate name {integ.name!r} (also integrations[{seen[integ.name]}])"))
            seen.setdefault(integ.name, i)
            if integ.app not in self.apps:
                problems.append((("integrations", i, "app"), f"no app named {integ.app!r}"))
            for kind, opts in integ.checks.items():
                check = REGISTRY.get(kind)
                if check is None:
                    known = ", ".join(sorted(REGISTRY))
                    problems.append((("integrations", i, "checks", kind), f"unknown check {kind!r} (known: {known})"))
                    continue
                try:
                    check.config_model.model_validate(opts)
                except ValidationError as exc:
                    for err in exc.errors():
                        problems.append((("integrations", i, "checks", kind, *err["loc"]), err["msg"]))
        if problems:
            raise _CrossRefError(problems)
        return self


class _CrossRefError(ValueError):
    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]):
        self.problems = problems
        super().__init__("; ".join(m for _, m in problems))


def config_path(explicit: str | Path | None) -> Path:
    return Path(explicit or os.environ.get("MAILWARDEN_CONFIG") or DEFAULT_CONFIG)


MAX_CONFIG_BYTES = 16 * 1024 * 1024  # a 1,000-integration configuration is about 300 KiB
MAX_SECRET_BYTES = 64 * 1024  # a client secret, a PEM key or certificate chain, a Fernet key


class Unreadable(Exception):
    """A file that is not read: not a regular file, or larger than its cap. ``reason`` completes "the file ..."."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def read_capped(path: Path, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file (after symlinks) of at most ``limit`` bytes. Never blocks on a
    FIFO (opened non-blocking, then refused), never reads a device (``/dev/zero``) or more than ``limit`` + 1 bytes.

    Raises OSError (missing, no permission, ...) or Unreadable."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except ValueError:  # a NUL in the path
        raise Unreadable("has a path with a NUL character") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise Unreadable(f"is {kind}, not a regular file")
        os.set_blocking(fd, True)
        data = bytearray()
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) > limit:
        raise Unreadable(f"is larger than {_size(limit)}")
    return bytes(data)


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n >= 1024 * 1024 else f"{n // 1024} KiB"


def load(path: str | Path) -> Config:
    """Read and validate the config file; raise ConfigError listing every problem with path and line."""
    path = Path(path)
    try:
        raw = read_capped(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigError("the configuration file does not exist", where=str(path),
                          hint="Pass --config FILE or set MAILWARDEN_CONFIG") from None
    except OSError as exc:
        raise ConfigError(f"the configuration file cannot be read ({exc.strerror})", where=str(path)) from None
    except Unreadable as exc:
        raise ConfigError(f"the configuration file {exc.reason}", where=str(path),
                          hint="Pass the YAML file itself with --config") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"the file is not UTF-8 text (byte 0x{exc.object[exc.start]:02x})",
                          where=f"{path}, line {line}", hint="Save the configuration as UTF-8") from None
    try:
        doc = yamlpos.load(text, str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        refused = "refused YAML" if isinstance(exc, yamlpos.LimitError) else "malformed YAML"
        raise ConfigError(f"{refused}: {problem}", where=where) from None
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping (key: value)", where=f"{path}, line 1")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            inner = err.get("ctx", {}).get("error")
            if isinstance(inner, _CrossRefError):
                problems += [_problem(doc, loc, msg) for loc, msg in inner.problems]
            else:
                problems.append(_problem(doc, tuple(err["loc"]), _message(err)))
        raise ConfigError(f"{len(problems)} problem(s) in the configuration", where=str(path),
                          problems=problems) from None
    cfg.base_dir = path.resolve().parent
    return cfg


def text_line_of(path: Path, offset: int) -> int:
    return path.read_bytes()[:offset].count(b"\n") + 1


def _message(err: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key (check its spelling and indentation)"
    if err["type"] == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _problem(doc: yamlpos.PositionedYaml, loc: tuple[str | int, ...], msg: str) -> str:
    line = doc.line_of(loc)
    return f"{yamlpos.format_loc(loc)} (line {line}): {msg}" if line else f"{yamlpos.format_loc(loc)}: {msg}"


def resolve_ref(ref: str, base_dir: Path, *, what: str) -> str:
    """Resolve 'env:NAME' / 'file:PATH' to its value. The value is registered with the redactor.

    A file is read only when it is a regular file of at most ``MAX_SECRET_BYTES`` (``read_capped``) holding UTF-8
    text (a leading byte-order mark is dropped); every refusal is a SecretReferenceError naming ``what`` and the
    reference, never the value."""
    m = _REF.match(ref)
    if not m:
        raise SecretReferenceError(f"{what}: the value is not a reference (env:NAME or file:PATH)")
    scheme, target = m.groups()
    if scheme == "env":
        value = os.environ.get(target)
        if not value:
            raise SecretReferenceError(f"{what}: environment variable {target} is not set or empty",
                                       hint=f"Set {target} in the service's environment")
        if len(value) > MAX_SECRET_BYTES:
            raise SecretReferenceError(f"{what}: environment variable {target} is longer than "
                                       f"{_size(MAX_SECRET_BYTES)}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8, kept by Python as surrogates
            raise SecretReferenceError(f"{what}: environment variable {target} is not UTF-8 text",
                                       hint=f"Set {target} to the value as UTF-8 text") from None
    else:
        p = Path(target).expanduser()
        p = p if p.is_absolute() else base_dir / p
        try:
            raw = read_capped(p, MAX_SECRET_BYTES)
        except OSError as exc:
            raise SecretReferenceError(f"{what}: file {p} cannot be read ({exc.strerror})",
                                       hint="Check the path and that mailwarden's user may read it") from None
        except Unreadable as exc:
            raise SecretReferenceError(f"{what}: file {p} {exc.reason}",
                                       hint="Point the reference at a regular file holding only the value") from None
        try:
            value = raw.decode("utf-8-sig").strip()
        except UnicodeDecodeError as exc:
            raise SecretReferenceError(f"{what}: file {p} is not UTF-8 text (at byte {exc.start + 1})",
                                       hint="Save the file as UTF-8 text holding only the value") from None
        if not value:
            raise SecretReferenceError(f"{what}: file {p} is empty")
        if any(unicodedata.category(ch) == "Cc" and ch not in "\n\r\t" for ch in value):
            raise SecretReferenceError(f"{what}: file {p} holds control characters (is it a binary file?)",
                                       hint="Point the reference at a text file holding only the value")
    register_secret(value)
    return value


def references(cfg: Config) -> list[tuple[str, str]]:
    """Every secret reference in the config, with the key path that holds it."""
    refs = []
    if cfg.token_key:
        refs.append(("token_key", cfg.token_key))
    for name, app in cfg.apps.items():
        if app.secret:
            refs.append((f"apps.{name}.secret", app.secret))
        if app.certificate:
            refs.append((f"apps.{name}.certificate.key", app.certificate.key))
            refs.append((f"apps.{name}.certificate.cert", app.certificate.cert))
    return refs
