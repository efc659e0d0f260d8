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

import difflib
import ipaddress
import os
import re
import stat
import types
import typing
import unicodedata
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, overload

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from mailwarden import endpoints as _endpoints
from mailwarden.errors import ConfigError, SecretReferenceError
from mailwarden.monitor import yamlpos
from mailwarden.redact import register_secret

DEFAULT_CONFIG = "mailwarden.yaml"
LOOPBACK_BASE_URL = "http://127.0.0.1:8080"  # web.base_url when none is set: `validate` warns where links need one
SCHEMA_ID = "urn:mailwarden:config"  # the JSON Schema's $id (``json_schema``)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"  # an integration's name
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_REF = re.compile(r"^(env|file):(.+)$")


from mailwarden.durations import PATTERN as DURATION_PATTERN  # noqa: E402 - the kernel's
from mailwarden.durations import Duration, parse_duration  # noqa: E402,F401 - the kernel's, re-exported


def _check_ref(value: str) -> str:
    if not _REF.match(value):
        raise ValueError("a secret is given by reference, 'env:NAME' or 'file:PATH', never inline")
    return value


SecretRef = Annotated[str, BeforeValidator(lambda v: _check_ref(str(v))),
                      WithJsonSchema({"type": "string", "pattern": _REF.pattern,
                                      "examples": ["env:HELPDESK_SECRET", "file:/run/secrets/helpdesk"]})]

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
        raise ValueError("is far too large (use e.g. 30s, 5m, 1h30m, 2d)") from None


def _duration_schema(low: float, high: float) -> WithJsonSchema:
    """The JSON Schema of a duration within [low, high] seconds: a string of the kernel's form, or a number of
    seconds within the bounds."""
    shown = f"from {_shown(low)} to {_shown(high)}"
    return WithJsonSchema({"anyOf": [
        {"type": "string", "pattern": DURATION_PATTERN,
         "description": f"a duration such as 90s, 5m, 1h30m or 2d12h (units d, h, m, s, ms), {shown}"},
        {"type": "number", "minimum": low, "maximum": high, "description": f"seconds, {shown}"}]})


# A duration (``Duration``) within [low, high] seconds: beyond it the scheduler, a socket or a timestamp cannot take
# it (``serve`` crashed on an interval of 10^11 days that ``validate`` accepted). Each is spelt out as
# ``Annotated[float, ...]`` (not built by a function) so that type checkers see a type alias of float.
Interval = Annotated[float, BeforeValidator(_duration), _between(1.0, 31 * DAY),
                     _duration_schema(1.0, 31 * DAY)]  # how often a check runs
Timeout = Annotated[float, BeforeValidator(_duration), _between(0.01, HOUR),
                    _duration_schema(0.01, HOUR)]  # one network conversation
Window = Annotated[float, BeforeValidator(_duration), _between(1.0, 31 * DAY),
                   _duration_schema(1.0, 31 * DAY)]  # flapping, correlation
Lifetime = Annotated[float, BeforeValidator(_duration), _between(1.0, 366 * DAY),
                     _duration_schema(1.0, 366 * DAY)]  # sessions, links, reminders, maintenance windows
Wait = Annotated[float, BeforeValidator(_duration), _between(0.001, DAY),
                 _duration_schema(0.001, DAY)]  # a grace period, a retry's first backoff, how long to wait for others
Refresh = Annotated[float, BeforeValidator(_duration), _between(1.0, DAY),
                    _duration_schema(1.0, DAY)]  # how often a page reloads itself
Days = Annotated[int, Field(ge=0, le=MAX_DAYS)]


def _port_ok(port: int | None) -> bool:
    return port is None or 1 <= port <= 65535


@overload
def _url_port(url: str) -> str: ...
@overload
def _url_port(url: None) -> None: ...
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
    """Every key a person writes carries ``Field(description=...)``: the JSON Schema (``mailwarden schema``) shows it
    as the editor's hover help, and tests/monitor/test_schema.py fails on a key without one."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Defaults(_Model):
    """Settings every integration takes unless it sets its own."""

    interval: Interval = Field(default=300.0, description="How often each check runs, e.g. 5m.")
    timeout: Timeout = Field(default=30.0, description=(
        "How long one check may talk to Microsoft before it counts as an error."))
    failure_threshold: int = Field(default=2, ge=1, le=10_000, description=(
        "Failed runs in a row before a check counts as failing (and an alert goes out)."))
    success_threshold: int = Field(default=1, ge=1, le=10_000, description=(
        "Successful runs in a row before a failing check counts as recovered."))
    expiry_warning_days: int = Field(default=30, ge=0, le=MAX_DAYS, description=(
        "secret_expiry warns when the credential in use ends within this many days."))
    replication_grace: Wait = Field(default=300.0, description=(
        "How long a refusal of a client secret that Graph shows as just added counts as replication (Entra ID takes "
        "up to about two minutes), not as a failure."))


class CustomEndpoints(_Model):
    """Where Microsoft's services are reached with ``cloud: custom`` (a stand-in such as the sandbox, or a proxy);
    what is not given is the global cloud's."""

    authority: str = Field(description="The Entra ID authority, an https:// URL; the tenant is appended "
                                       "(<authority>/<tenant_id>).")
    graph: str = Field(description=(
        "Microsoft Graph's base URL with its version, e.g. https://graph.microsoft.com/v1.0."))
    ews: str | None = Field(default=None, description=(
        "The EWS URL, e.g. https://outlook.office365.com/EWS/Exchange.asmx."))
    imap: str | None = Field(default=None, description="The IMAP server, HOST or HOST:PORT (default port 993, TLS).")
    pop: str | None = Field(default=None, description="The POP3 server, HOST or HOST:PORT (default port 995, TLS).")
    smtp: str | None = Field(default=None, description=(
        "The SMTP server, HOST or HOST:PORT (default port 587, STARTTLS)."))
    ca_bundle: str | None = Field(default=None, description=(
        "A PEM file of the certificate authorities to trust for these hosts (a private CA, a TLS-inspecting proxy); "
        "relative to this file."))
    graph_resource: str | None = Field(default=None, description=(
        "The scope prefix of Graph tokens (default https://graph.microsoft.com)."))
    exchange_resource: str | None = Field(default=None, description=(
        "The scope prefix of app-only Exchange tokens (default https://outlook.office365.com)."))
    exchange_delegated_resource: str | None = Field(default=None, description=(
        "The scope prefix of delegated Exchange tokens (default https://outlook.office.com)."))
    exchange: Literal["online", "on_premises"] | None = Field(default=None, description=(
        "Whose Exchange answers: online (Exchange Online or a stand-in for it: EWS retires there on 1 April 2027) or "
        "on_premises (EWS not retired). Default: read from the EWS host."))

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
    """Bounded history: raw results kept by age and capped per check, hourly rollups for uptime and latency."""

    raw_hours: int = Field(default=48, ge=1, le=24 * 90, description=(
        "Hours every raw result (each run of a check) is kept. A raw result is kept "
        "while it is younger than raw_hours, or among the newest raw_per_check of its integration and check, or "
        "among the newest raw_per_check non-ok ones younger than failures_days, or the one its check's state shows; "
        "and always until its hour is rolled up."))
    raw_per_check: int = Field(default=200, ge=10, le=1_000_000, description=(
        "The newest raw results kept per integration and check."))
    failures_days: int = Field(default=30, ge=0, le=MAX_DAYS, description=(
        "Days non-ok raw results are kept, even beyond raw_per_check."))
    rollup_days: int = Field(default=90, ge=31, le=MAX_DAYS, description=(
        "Days the hourly rollups (uptime and latency) are kept; the uptime bars show 30."))


class WebConfig(_Model):
    """The status web app. It starts only with an access rule: ``auth: password`` (the default once
    ``password_hash`` is set), ``auth: proxy`` (a trusted reverse proxy names the user in
    ``proxy_header``), or ``auth: none`` written out explicitly."""

    enabled: bool = Field(default=True, description=(
        "Run the web app (it also needs an access rule: auth, password_hash or proxy_header)."))
    listen: str = Field(default="127.0.0.1:8080", description="Address and port the web app listens on, HOST:PORT "
                                                      "(0.0.0.0:8080 for every interface, [::1]:8080 for IPv6).")
    base_url: str = Field(default=LOOPBACK_BASE_URL, description=(
        "The address people open mailwarden at, e.g. https://mailwarden.contoso.com: the links in alerts and "
        "reauthorisation requests, and the redirect URI <base_url>/auth/callback registered on delegated apps, use "
        "it. Set it on every real install: the default (loopback) opens on this machine only."))
    auth: Literal["password", "proxy", "none"] | None = Field(default=None, description=(
        "The access rule: password (admin_user and password_hash), proxy (a trusted reverse proxy names the user "
        "in proxy_header) or none (no login, written out on purpose). Default: password when password_hash is set, "
        "proxy when proxy_header is set; without any, the web app does not start."))
    admin_user: str = Field(default="admin", description="The user name of the password login.")
    password_hash: str | None = Field(default=None, description=(
        "The login password's hash from `mailwarden web hash-password`, or an env:NAME / file:PATH reference "
        "holding it."))
    proxy_header: str | None = Field(default=None, description=(
        "With auth: proxy, the request header the reverse proxy sets to the signed-in user, e.g. X-Forwarded-User."))
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"], description=(
        "Addresses or networks (CIDR) of reverse proxies: their X-Forwarded-For names the client (rate limits, the "
        "log, the audit) and, with auth: proxy, their proxy_header names the user."))
    allowed_hosts: list[str] = Field(default_factory=list, description=(
        "Host names the app answers to besides base_url's host, the listen host and loopback (against DNS "
        "rebinding), e.g. the name Prometheus scrapes each instance by; *.example.com patterns; no ports."))
    session_key: SecretRef | None = Field(default=None, description=(
        "env:NAME or file:PATH of the key that signs session cookies; default: a random one per start (every "
        "restart signs everyone out)."))
    session_max_age: Lifetime = Field(default=12 * 3600.0, description="A session ends this long after sign-in.")
    refresh: Refresh = Field(default=60.0, description="The pages reload themselves this often.")
    public_metrics: bool = Field(default=False, description=(
        "Serve /metrics without a login (Prometheus may also use basic auth)."))
    reauth_link_ttl: Lifetime = Field(default=7 * 86400.0, description=(
        "How long a reauthorisation link in an alert stays valid."))
    retention: RetentionConfig = Field(default_factory=RetentionConfig, description=(
        "How much check history the database keeps."))

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
    """How many checks run at once."""

    total: int = Field(default=20, ge=1, le=1000, description="Checks running at once, in all.")
    per_tenant: int = Field(default=5, ge=1, le=1000, description="Checks running at once against one tenant.")


class QueueLimits(_Model):
    """Microsoft's limits, held across every worker in queue mode (monitor.slots: advisory-lock slots)."""

    per_mailbox: int = Field(default=2, ge=1, le=1024, description=(
        "Probes running at once on one mailbox and protocol, across every worker (Exchange limits concurrent "
        "sessions per mailbox)."))
    per_app: int | None = Field(default=None, ge=1, le=1024, description=(
        "Checks running at once with one app registration, across every worker (null: no limit of its own)."))
    per_tenant: int | None = Field(default=None, ge=1, le=1024, description=(
        "Checks running at once against one tenant, across every worker (null: concurrency.per_tenant)."))


class QueueSettings(_Model):
    """How the queue's workers are watched (execution.mode: queue)."""

    limits: QueueLimits = Field(default_factory=QueueLimits, description="Limits held across every worker.")
    heartbeat: int = Field(default=5, ge=1, le=60, description=(
        "Seconds between a worker's heartbeats in the database."))
    stalled_after: int = Field(default=20, ge=3, le=600, description=(
        "Seconds without a heartbeat after which a worker counts as dead and its running checks are run again "
        "(once); at least three heartbeats."))
    slot_wait: int = Field(default=60, ge=1, le=3600, description=(
        "How long a job waits for its mailbox's, app's or tenant's slot before it gives up until the next interval."))
    workerless_after: int = Field(default=60, ge=0, le=3600, description=(
        "Seconds with no live worker (none sent a heartbeat within stalled_after) after which the leader takes the "
        "waiting checks and runs them, and every due check, itself until a worker is live again; 0: never (the checks "
        "wait in the queue for a worker)."))

    @model_validator(mode="after")
    def _three_beats(self) -> QueueSettings:
        if self.stalled_after < 3 * self.heartbeat:
            raise ValueError(f"stalled_after ({self.stalled_after} s) must be at least three heartbeats "
                             f"(3 x {self.heartbeat} s): a live worker would be taken for dead")
        return self


class Execution(_Model):
    """Where checks run: in this process (local), or on a job queue in PostgreSQL that `mailwarden worker`
    processes on any number of machines take from (queue)."""

    mode: Literal["local", "queue"] = Field(default="local", description=(
        "local: the serving process runs every check (SQLite or PostgreSQL); queue: the leader enqueues due checks "
        "and workers run them (PostgreSQL only; README \"Queue mode\")."))
    queue: QueueSettings = Field(default_factory=QueueSettings, description="The queue's limits and watch.")


class TenantConfig(_Model):
    """A Microsoft Entra ID tenant (directory)."""

    tenant_id: str = Field(description="The directory (tenant) ID, a GUID, or a verified domain such as contoso.com.")
    monitor_app: str | None = Field(default=None, description=(
        "The app (a name under apps) mailwarden reads every app's credentials with: Application.Read.All; "
        "AuditLog.Read.All and Directory.Read.All for the consumer check's sign-in evidence."))

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, v: str) -> str:
        if not (_GUID.match(v) or re.match(r"^[A-Za-z0-9.-]+\.[A-Za-z]{2,}$", v)):
            raise ValueError("must be the directory (tenant) ID, a GUID, or a verified domain")
        return v


class CertificateConfig(_Model):
    """A certificate credential: the app signs its token requests with the private key."""

    key: SecretRef = Field(description="env:NAME or file:PATH of the PEM private key.")
    cert: SecretRef = Field(description="env:NAME or file:PATH of the PEM certificate uploaded to the app "
                                        "registration.")


DEFAULT_REMINDER_DAYS = (60, 30, 14, 7, 3, 1, 0)  # 0: on expiry


class RotationConfig(_Model):
    """Rotation of an app's client secret. ``automated`` is opt-in: the tenant's monitor_app then needs
    Application.ReadWrite.OwnedBy and to be an owner of this app (or Application.ReadWrite.All)."""

    automated: bool = Field(default=False, description=(
        "mailwarden creates the new secret itself, hands it to the hooks and later removes the old one."))
    start_days: int = Field(default=30, ge=1, le=MAX_DAYS, description=(
        "Automated rotation starts when the secret in use has this many days left."))
    lifetime_days: int = Field(default=180, ge=1, le=730, description=(
        "The lifetime of a secret mailwarden creates, in days (the portal caps it at 24 months)."))
    hook_command: list[str] | None = Field(default=None, description=(
        "A command (as a list: program and arguments) that receives the new secret on standard input."))
    hook_url: str | None = Field(default=None, description=(
        "An https:// webhook that receives POST JSON {app, client_id, key_id, end, secret}."))
    hook_timeout: Timeout = Field(default=60.0, description="How long a hook may take.")
    remove_old_after_days: int = Field(default=7, ge=0, le=MAX_DAYS, description=(
        "Remove the old secret once the new one has worked this many days."))

    @field_validator("hook_url")
    @classmethod
    def _https_hook(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("https://"):
            raise ValueError("the hook receives a secret: it must be an https:// URL")
        return _url_port(v)


class AppConfig(_Model):
    """An app registration in Entra ID, with the credential the consuming system uses (by reference)."""

    tenant: str = Field(description="The tenant (a name under tenants) the app is registered in.")
    client_id: str = Field(description="The Application (client) ID, a GUID, from the app's Overview page.")
    secret: SecretRef | None = Field(default=None, description=(
        "env:NAME or file:PATH holding the client secret's Value (not its Secret ID); never the secret itself."))
    certificate: CertificateConfig | None = Field(default=None, description=(
        "A certificate credential instead of a secret."))
    secret_expires_on: date | None = Field(default=None, description=(
        "The secret's end date, YYYY-MM-DD: used only when Graph cannot be read."))
    observe_only: bool = Field(default=False, description=(
        "mailwarden holds no copy of this app's secret or certificate: its integrations are watched from outside "
        "only, through the tenant's monitor_app (secret_expiry, the consuming system's sign-ins: consumer, and the "
        "directory audit), never by signing in as the app. Give neither secret nor certificate."))
    display_name: str | None = Field(default=None, description="The app's name in Entra ID, shown in notices.")
    public_client: bool = Field(default=False, description=(
        "\"Allow public client flows\" is on for the app: `mailwarden reauth --device-code` may be used."))
    reminder_days: list[Days] = Field(default_factory=lambda: list(DEFAULT_REMINDER_DAYS), description=(
        "Days before the secret ends at which a reminder goes out (0: on the day it ends)."))
    rotation: RotationConfig = Field(default_factory=RotationConfig, description="Rotation of the app's client secret.")

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, v: str) -> str:
        if not _GUID.match(v):
            raise ValueError("must be the Application (client) ID, a GUID, from the app's Overview page")
        return v.lower()

    @model_validator(mode="after")
    def _one_credential(self) -> AppConfig:
        if self.observe_only:
            if self.secret is not None or self.certificate is not None:
                raise ValueError("observe_only: true means mailwarden holds no credential of the app: remove "
                                 "'secret'/'certificate', or observe_only")
            if self.rotation.automated:
                raise ValueError("rotation.automated writes a new secret into mailwarden's copy, and an "
                                 "observe_only app has none")
        elif (self.secret is None) == (self.certificate is None):
            raise ValueError("give exactly one of 'secret' or 'certificate' (or observe_only: true, when mailwarden "
                             "is to watch the app without a copy of its credential)")
        if any(d < 0 for d in self.reminder_days):
            raise ValueError("reminder_days are days before expiry (0: on expiry), never negative")
        if self.rotation.automated and not (self.secret or "").startswith("file:"):
            raise ValueError("rotation.automated needs a writable 'secret: file:PATH' reference "
                             "(mailwarden writes the new secret there)")
        return self


def _check_kinds() -> dict[str, str]:
    """Each check kind with the first paragraph of its module's docstring (the registry's modules say what they do)."""
    import importlib

    from mailwarden.checks import CHECKS  # late: the checks import this module's types

    kinds = {}
    for kind, target in CHECKS.items():
        doc = (importlib.import_module(target.partition(":")[0]).__doc__ or kind).strip().split("\n\n")[0]
        kinds[kind] = " ".join(doc.split()).removeprefix(f"`{kind}`: ")
    return kinds


def _checks_json_schema(schema: dict[str, Any]) -> None:
    """IntegrationConfig.checks as the loader takes it: a list of kinds, or a mapping of kind to its options (or
    nothing). The options themselves are validated by ``validate``."""
    kinds = _check_kinds()
    options = {"anyOf": [{"type": "object"}, {"type": "null"}]}
    keep: dict[str, Any] = {k: schema[k] for k in ("description", "title") if k in schema}
    schema.clear()
    schema.update(keep, anyOf=[
        {"type": "array", "items": {"enum": list(kinds)}, "uniqueItems": True},
        {"type": "object", "additionalProperties": False,
         "properties": {kind: {**options, "description": f"{kind}: {text}"} for kind, text in kinds.items()}}])


def _kinds_json_schema(schema: dict[str, Any]) -> None:
    schema["items"] = {"enum": list(_check_kinds())}


def _default_checks() -> dict[str, dict[str, Any]]:
    from mailwarden.checks import TOKEN_KIND

    return {TOKEN_KIND: {}, "secret_expiry": {}}


class IntegrationConfig(_Model):
    """One consuming system's connection to one mailbox (an app serving several mailboxes is several integrations)."""

    name: str = Field(pattern=NAME_PATTERN, description=(
        "A unique name: letters, digits, '.', '_' and '-', starting with a letter or digit; shown in alerts and "
        "used by `mailwarden check -i NAME`."))
    app: str = Field(description="The app (a name under apps) the consuming system signs in with.")
    tenant: str | None = Field(default=None, description=(
        "The tenant (a name under tenants) whose mailbox this is, when the app is a multitenant registration of "
        "another (home) tenant: tokens are asked in this tenant, the app's credentials are read in its home tenant "
        "(apps.<name>.tenant). Default: the app's tenant."))
    flow: Literal["app", "delegated"] = Field(description=(
        "delegated: a user signs in (authorization code with a refresh token; set account); app: the app's own "
        "credential (client credentials)."))
    mailbox: str = Field(description="The mailbox the consuming system reads or sends from (may be a shared mailbox).")
    account: str | None = Field(default=None, description=(
        "flow: delegated only: the user who signs in (for a shared mailbox, the licensed delegate)."))
    system: str | None = Field(default=None, description="The consuming system, named in alerts and fix steps.")
    checks: dict[str, dict[str, Any]] = Field(
        default_factory=_default_checks, json_schema_extra=_checks_json_schema,
        description=("The checks to run: a list of kinds ([token, pop]) or a mapping of kind to its options "
                     "(pop: {backlog_warn: 50}). Default: token and secret_expiry (secret_expiry and consumer for an "
                     "observe_only app)."))
    owners: list[str] = Field(default_factory=list, description=(
        "Addresses of the people who own the integration: with alerts.owner_route set, its notices reach them too."))
    tags: list[str] = Field(default_factory=list, description="Labels that alert routes select on (routes[].tags).")
    interval: Interval | None = Field(default=None, description=(
        "How often its checks run (default: defaults.interval)."))
    timeout: Timeout | None = Field(default=None, description="Its checks' time limit (default: defaults.timeout).")
    failure_threshold: int | None = Field(default=None, ge=1, le=10_000, description=(
        "Failed runs in a row before failing (default: defaults.failure_threshold)."))
    success_threshold: int | None = Field(default=None, ge=1, le=10_000, description=(
        "Successful runs in a row before recovered (default: defaults.success_threshold)."))
    expiry_warning_days: int | None = Field(default=None, ge=0, le=MAX_DAYS, description=(
        "Days before the credential ends that secret_expiry warns (default: defaults.expiry_warning_days)."))
    secret_field: str | None = Field(default=None, description=(
        "Where the consuming system takes its secret (a settings field), named in fix and rotation steps."))
    reauth_after_rotation: bool = Field(default=False, description=(
        "The consuming system needs a new sign-in after a new secret (as Oracle B2C Service does)."))
    paused: bool = Field(default=False, description="Do not run its checks (shown as paused).")

    @field_validator("checks", mode="before")
    @classmethod
    def _checks_shape(cls, v: Any) -> Any:
        return _checks_mapping(v)

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

    # each check's options as its kind's model (checks.base.Check.config_model), parsed once when the configuration
    # is loaded; every run of the check reads them here (``options``)
    _options: dict[str, BaseModel] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _parse_options(self) -> IntegrationConfig:
        self.parse_options()
        return self

    def parse_options(self) -> None:
        """Parse every check's options with its kind's ``config_model``. An unknown kind or invalid options are
        left out here: the configuration's check of names and options (``_cross_references``) refuses them, each
        with its key and line."""
        from mailwarden.checks import REGISTRY  # late: the registry imports this module's types

        parsed: dict[str, BaseModel] = {}
        for kind, opts in self.checks.items():
            if kind in REGISTRY:
                try:
                    parsed[kind] = REGISTRY[kind].config_model.model_validate(opts)
                except ValidationError:
                    continue
        self._options = parsed

    def options(self, kind: str) -> BaseModel:
        """The options of its ``kind`` check, as parsed when the configuration was loaded."""
        try:
            return self._options[kind]
        except KeyError:
            raise ConfigError(f"integration {self.name!r} has no valid options of a {kind!r} check "
                              f"(checks: {', '.join(self.checks) or 'none'})") from None


class RouteConfig(_Model):
    """Where notices go: Apprise URLs, or an Apprise YAML/TEXT config file; filters choose what it gets.

    A route receives a notice when every filter it sets matches (no filter: everything). A ``default``
    route receives only what no other configured route took."""

    name: str | None = Field(default=None, description=(
        "The route's name in the delivery log and `mailwarden alerts test --route` (default: routes[N])."))
    url: str | None = Field(default=None, description=(
        "An Apprise URL, e.g. mailto://relay.contoso.com?to=oncall@contoso.com."))
    urls: list[str] = Field(default_factory=list, description="Several Apprise URLs.")
    config: str | None = Field(default=None, description=(
        "An Apprise YAML or TEXT configuration file (relative to this file)."))
    tags: list[str] = Field(default_factory=list, description="Only integrations with one of these tags.")
    severity: list[Literal["critical", "warning", "info"]] = Field(default_factory=list, description=(
        "Only notices of these severities."))
    checks: list[str] = Field(default_factory=list, json_schema_extra=_kinds_json_schema, description=(
        "Only notices about these check kinds."))
    default: bool = Field(default=False, description="Receives only what no other route took.")
    timeout: Timeout | None = Field(default=None, description=(
        "How long each service may take to connect and answer (default: Apprise's 4s)."))

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

    name: str = Field(description="The window's name, shown in the maintenance summary.")
    start: datetime | None = Field(default=None, description=(
        "A one-off window's start, e.g. 2027-01-09T22:00:00+01:00."))
    end: datetime | None = Field(default=None, description="A one-off window's end.")
    cron: str | None = Field(default=None, description=(
        "A recurring window's start, a 5-field crontab, e.g. \"0 22 * * tue\"."))
    duration: Lifetime | None = Field(default=None, description="A recurring window's length, e.g. 2h.")
    timezone: str = Field(default="UTC", description="The IANA time zone of cron, e.g. Europe/Berlin.")
    integrations: list[str] = Field(default_factory=list, description="Only these integrations (by name).")
    tags: list[str] = Field(default_factory=list, description="Only integrations with one of these tags.")

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
    """A check that keeps changing state is flapping: one notice, then quiet until it settles."""

    transitions: int = Field(default=4, ge=2, le=1000, description="State changes of one check within window that are "
                                                           "flapping.")
    window: Window = Field(default=3600.0, description="The flapping window; quiet until no change for this long.")


class CorrelationConfig(_Model):
    """Network and sign-in service failures of several integrations at once become one incident."""

    window: Wait = Field(default=300.0, description=(
        "How long such a failure waits for others before it is alerted alone."))
    min_integrations: int = Field(default=2, ge=2, le=100_000, description=(
        "Integrations failing together that make one incident."))


class AlertsConfig(_Model):
    owner_route: str | None = Field(default=None, description=(
        "How owners receive the notices about their integrations: an Apprise URL with {owner}, e.g. "
        "mailto://relay.contoso.com?to={owner}."))
    routes: list[RouteConfig] = Field(default_factory=list, description="Where notices go.")
    reminder_interval: Lifetime = Field(default=4 * 3600.0, description="How often an open incident is reminded.")
    max_attempts: int = Field(default=6, ge=1, le=1000, description=(
        "Delivery attempts per notice before it counts as failed."))
    retry_backoff: Wait = Field(default=30.0, description="The first retry's delay; it doubles each attempt, up to 1h.")
    heartbeat_url: str | None = Field(default=None, description=(
        "A dead-man switch: mailwarden opens (GET) this URL after every dispatch cycle."))
    maintenance: list[MaintenanceWindow] = Field(default_factory=list, description=(
        "Maintenance windows: failures inside them are summarised, not alerted."))
    flapping: FlappingConfig = Field(default_factory=FlappingConfig, description="Flapping detection.")
    correlation: CorrelationConfig = Field(default_factory=CorrelationConfig, description=(
        "Grouping of failures that share a cause."))
    enabled: bool | None = Field(default=None, description=(
        "Send alerts (default: on when a route, owner_route or heartbeat_url is set)."))

    @field_validator("heartbeat_url")
    @classmethod
    def _heartbeat_port(cls, v: str | None) -> str | None:
        return _url_port(v)

    def active(self) -> bool:
        if self.enabled is not None:
            return self.enabled
        return bool(self.routes or self.owner_route or self.heartbeat_url)


PollEvery = Annotated[float, BeforeValidator(_duration), _between(MINUTE, DAY),
                      _duration_schema(MINUTE, DAY)]  # how often a log is read
Overlap = Annotated[float, BeforeValidator(_duration), _between(1.0, 7 * DAY),
                    _duration_schema(1.0, 7 * DAY)]
LogDays = Annotated[float, BeforeValidator(_duration), _between(DAY, 30 * DAY),
                    _duration_schema(DAY, 30 * DAY)]  # what is kept of a log Entra ID keeps 30 days
LogSpan = Annotated[float, BeforeValidator(_duration), _between(1.0, 30 * DAY),
                    _duration_schema(1.0, 30 * DAY)]


class SignInEvidenceConfig(_Model):
    """Reading the consuming systems' own sign-ins from Entra ID's sign-in log (Graph beta ``auditLogs/signIns``),
    through each tenant's ``monitor_app`` (AuditLog.Read.All and Directory.Read.All; the tenant needs Entra ID P1 or
    P2). One request per tenant, event type and app per poll, whatever the number of integrations."""

    enabled: bool | None = Field(default=None, description="Read the sign-in log (default: on for every tenant with a "
                                                   "monitor_app).")
    poll_every: PollEvery = Field(default=5 * MINUTE, description="How often the sign-in log is read.")
    overlap: Overlap = Field(default=45 * MINUTE, description=(
        "Each read goes this far back again: non-interactive sign-ins arrive up to 30 minutes late."))
    keep: LogDays = Field(default=14 * DAY, description="How long sign-ins are kept (Entra ID itself keeps 30 days).")
    backfill: LogSpan = Field(default=DAY, description="How far back the first read goes.")

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

    signins: SignInEvidenceConfig = Field(default_factory=SignInEvidenceConfig, description=(
        "The consuming systems' own sign-ins, read from Entra ID's sign-in log (for the consumer check)."))


class Config(_Model):
    """The mailwarden configuration file."""

    database: str = Field(default="sqlite:///mailwarden.db", description=(
        "The database URL: sqlite:///mailwarden.db (relative to this file) or postgresql+psycopg://user@host/db."))
    token_key: SecretRef | None = Field(default=None, description=(
        "env:NAME or file:PATH of the Fernet key that encrypts stored refresh tokens; required with PostgreSQL "
        "(every instance shares it); with SQLite a 0600 key file beside the database is the default."))
    cloud: Literal["global", "usgov", "china", "custom"] = Field(default="global", description=(
        "Which Microsoft cloud: global, usgov, china, or custom (then endpoints says where)."))
    endpoints: CustomEndpoints | None = Field(default=None, description="The hosts of cloud: custom.")
    web: WebConfig = Field(default_factory=WebConfig, description=(
        "The status web app, and the address that links in alerts point to (base_url)."))
    defaults: Defaults = Field(default_factory=Defaults, description="Settings every integration takes unless it "
                                                                     "sets its own.")
    concurrency: Concurrency = Field(default_factory=Concurrency, description="How many checks run at once.")
    execution: Execution = Field(default_factory=Execution, description=(
        "Where checks run: this process (local) or workers taking them from a queue in PostgreSQL (queue)."))
    tenants: dict[str, TenantConfig] = Field(default_factory=dict, description=(
        "Entra ID tenants, each under a name of your choice that apps refer to."))
    apps: dict[str, AppConfig] = Field(default_factory=dict, description=(
        "App registrations, each under a name of your choice that integrations refer to."))
    integrations: list[IntegrationConfig] = Field(default_factory=list, description=(
        "What is monitored: one entry per consuming system and mailbox."))
    alerts: AlertsConfig = Field(default_factory=AlertsConfig, description="Who is told what broke, and how.")
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig, description=(
        "What Microsoft records about the consuming systems themselves."))
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description=(
        "How much mailwarden logs."))

    # Set by load(): the directory relative paths are resolved against (not a key of the file).
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    # integration(): name -> position in ``integrations``, rebuilt whenever a hit does not match.
    _by_name: dict[str, int] = PrivateAttr(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @base_dir.setter
    def base_dir(self, value: Path) -> None:
        self._base_dir = Path(value)

    # -- lookups -----------------------------------------------------------------------------
    def integration(self, name: str) -> IntegrationConfig:
        """The integration called ``name`` (KeyError if none), in constant time: the scheduler and the workers look one
        up per due check. The index holds positions and is checked on every hit, so a list replaced or edited in place
        is re-indexed rather than answered from stale entries."""
        at = self._by_name.get(name)
        if at is None or at >= len(self.integrations) or self.integrations[at].name != name:
            self._by_name = {integ.name: i for i, integ in enumerate(self.integrations)}
            at = self._by_name.get(name)
            if at is None:
                raise KeyError(name)
        return self.integrations[at]

    def app_of(self, integ: IntegrationConfig) -> AppConfig:
        return self.apps[integ.app]

    def tenant_of(self, app: AppConfig) -> TenantConfig:
        return self.tenants[app.tenant]

    def tenant_name_of(self, integ: IntegrationConfig) -> str:
        """The tenant (its name in ``tenants``) an integration's tokens and mailbox are in: its own ``tenant`` for a
        multitenant app used outside its home tenant, else the app's. The app's credentials are always read in the
        app's (home) tenant."""
        return integ.tenant or self.apps[integ.app].tenant

    def integration_tenant(self, integ: IntegrationConfig) -> TenantConfig:
        return self.tenants[self.tenant_name_of(integ)]

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

    def longest(self, name: str) -> float:
        """The longest ``interval`` or ``timeout`` of any integration, in seconds (the default's when there is none)."""
        return max((float(self.threshold(i, name)) for i in self.integrations),
                   default=float(getattr(self.defaults, name)))

    @field_validator("database")
    @classmethod
    def _database_port(cls, v: str) -> str:
        return v if v.startswith("sqlite") else _url_port(v) or v

    # -- cross-references ----------------------------------------------------------------------
    @model_validator(mode="wrap")
    @classmethod
    def _cross_refs(cls, data: Any, handler: Any) -> Config:
        """Names that must match (apps, tenants, check kinds, integrations). ``load`` also runs these checks when
        some key is invalid, so that one run of ``validate`` reports both."""
        cfg = handler(data)
        problems = _cross_references(data if isinstance(data, dict) else cfg.model_dump())
        if problems:
            raise _CrossRefError(list(dict.fromkeys(problems)))  # one line per problem (several users of an app)
        for integ in cfg.integrations:  # an observe-only app's integrations cannot sign in: other default checks
            if "checks" not in integ.model_fields_set and cfg.apps[integ.app].observe_only:
                integ.checks = {k: dict(v) for k, v in OBSERVE_ONLY_CHECKS.items()}
                integ.parse_options()
        return cfg


Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]


class _CrossRefError(ValueError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(m for _, m in problems))


def _checks_mapping(v: Any) -> Any:
    """The two forms of ``checks``: a list of kinds, or a mapping of kind to its options (or nothing)."""
    if isinstance(v, list):
        return {str(k): {} for k in v}
    if isinstance(v, dict):
        return {k: ({} if opts is None else opts) for k, opts in v.items()}
    return v


def _suggest(word: Any, names: Any) -> str:
    """'; did you mean 'x'?' when one of ``names`` is close to ``word`` (a misspelling), else ''."""
    close = difflib.get_close_matches(str(word), [str(n) for n in names], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _no_such(what: str, name: str, names: Any) -> str:
    names = sorted(str(n) for n in names)
    hint = _suggest(name, names)
    if not hint:
        hint = f" (defined: {', '.join(names[:12])}{', ...' if len(names) > 12 else ''})" if names else \
            f" (none is defined under {what}s)"
    return f"no {what} named {name!r}{hint}"


def _cross_references(data: dict[str, Any]) -> list[Problem]:
    """Every name that refers to another part of the file and does not match, on the data as written (it need not be
    valid otherwise: whatever is not the expected shape is left to the key's own problem)."""
    from mailwarden.checks import REGISTRY  # late: the registry imports this module's types

    def mapping(v: Any) -> dict:
        return v if isinstance(v, dict) else {}

    def listing(v: Any) -> list:
        return v if isinstance(v, list) else []

    problems: list[Problem] = []
    tenants, apps = mapping(data.get("tenants")), mapping(data.get("apps"))
    integrations = listing(data.get("integrations"))

    def refers(loc: Loc, value: Any, names: Any, what: str) -> None:
        if isinstance(value, str) and value not in names:
            problems.append((loc, _no_such(what, value, names)))

    execution, database = mapping(data.get("execution")), data.get("database", "sqlite:///mailwarden.db")
    if execution.get("mode") == "queue" and isinstance(database, str) and database.startswith("sqlite"):
        problems.append((("execution", "mode"), "queue mode keeps its jobs in PostgreSQL: set database to a "
                         "postgresql+psycopg:// URL, or use mode: local (one process, SQLite allowed)"))
    cloud = data.get("cloud", "global")
    if cloud == "custom" and data.get("endpoints") is None:
        problems.append((("endpoints",), "cloud: custom needs an 'endpoints' section"))
    if cloud in ("global", "usgov", "china") and data.get("endpoints") is not None:
        problems.append((("endpoints",), f"'endpoints' is only used with cloud: custom (cloud is {cloud})"))
    for name, tenant in tenants.items():
        if mapping(tenant).get("monitor_app") is not None:
            refers(("tenants", name, "monitor_app"), tenant["monitor_app"], apps, "app")
            if mapping(apps.get(tenant["monitor_app"])).get("observe_only") is True:
                problems.append((("tenants", name, "monitor_app"),
                                 f"the monitor app signs in to read Graph, and app {tenant['monitor_app']!r} is "
                                 "observe_only (mailwarden holds no credential of it)"))
    if mapping(mapping(data.get("evidence")).get("signins")).get("enabled") is True and tenants and not any(
            mapping(t).get("monitor_app") for t in tenants.values()):
        problems.append((("evidence", "signins", "enabled"),
                         "sign-in evidence is read with a tenant's monitor_app, and no tenant names one: set "
                         "tenants.<name>.monitor_app to an app with AuditLog.Read.All and Directory.Read.All"))
    for name, app in apps.items():
        refers(("apps", name, "tenant"), mapping(app).get("tenant"), tenants, "tenant")
    seen: dict[str, int] = {}
    named = {i.get("name") for i in integrations if isinstance(i, dict)} - {None}
    for i, integ in enumerate(integrations):
        if not isinstance(integ, dict):
            continue
        name = integ.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append((("integrations", i, "name"),
                                 f"duplicate name {name!r} (also integrations[{seen[name]}])"))
            seen.setdefault(name, i)
        refers(("integrations", i, "app"), integ.get("app"), apps, "app")
        if integ.get("tenant") is not None:
            refers(("integrations", i, "tenant"), integ["tenant"], tenants, "tenant")
        written = integ.get("checks")
        at = (lambda j, kind: j) if isinstance(written, list) else (lambda j, kind: kind)
        for j, (kind, opts) in enumerate(mapping(_checks_mapping(written)).items()):
            loc = ("integrations", i, "checks", at(j, kind))
            if kind not in REGISTRY:
                problems.append((loc, f"unknown check {kind!r}{_suggest(kind, REGISTRY)} "
                                      f"(known: {', '.join(REGISTRY)})"))
            elif isinstance(opts, dict):
                model = REGISTRY[kind].config_model
                try:
                    model.model_validate(opts)
                except ValidationError as exc:
                    problems += [((*loc, *err["loc"]), _message(err, model)) for err in exc.errors()]
                canary = opts.get("canary")  # the reading side names the integration that sends it
                if isinstance(canary, dict) and "from" in canary:
                    refers((*loc, "canary", "from"), canary["from"], named, "integration")
        app = mapping(apps.get(integ.get("app"))) if isinstance(integ.get("app"), str) else {}
        if app.get("observe_only") is True:
            problems += _observe_only(i, integ, app, mapping(tenants.get(app.get("tenant"))), written)
    alerts = mapping(data.get("alerts"))
    for r, route in enumerate(listing(alerts.get("routes"))):
        for j, kind in enumerate(listing(mapping(route).get("checks"))):
            if isinstance(kind, str) and kind not in REGISTRY:
                problems.append((("alerts", "routes", r, "checks", j),
                                 f"unknown check {kind!r}{_suggest(kind, REGISTRY)} (known: {', '.join(REGISTRY)})"))
    names = {i.get("name") for i in integrations if isinstance(i, dict)}
    for w, window in enumerate(listing(alerts.get("maintenance"))):
        for j, name in enumerate(listing(mapping(window).get("integrations"))):
            refers(("alerts", "maintenance", w, "integrations", j), name, names - {None}, "integration")
    return problems


# an observe-only app's integrations, by default
OBSERVE_ONLY_CHECKS: dict[str, dict[str, Any]] = {"secret_expiry": {}, "consumer": {}}


def _observe_only(i: int, integ: dict, app: dict, tenant: dict, written: Any) -> list[Problem]:
    """An integration of an app mailwarden holds no credential of: only the checks that need none, and a tenant
    monitor_app to read the app's credentials and sign-ins with."""
    from mailwarden.checks import REGISTRY  # late: the registry imports this module's types

    problems: list[Problem] = []
    kinds = _checks_mapping(written) if written is not None else OBSERVE_ONLY_CHECKS
    at = (lambda j, kind: j) if isinstance(written, list) else (lambda j, kind: kind)
    for j, kind in enumerate(kinds if isinstance(kinds, dict) else {}):
        if kind in REGISTRY and REGISTRY[kind].needs_credential:
            problems.append((("integrations", i, "checks", at(j, kind)),
                             f"check {kind!r} signs in as the app, and app {integ.get('app')!r} is observe_only "
                             f"(mailwarden holds no copy of its credential): remove the check, or give the app "
                             f"its 'secret' or 'certificate'; observe-only checks: "
                             f"{', '.join(k for k in REGISTRY if not REGISTRY[k].needs_credential)}"))
    if not tenant.get("monitor_app") and isinstance(app.get("tenant"), str):
        problems.append((("apps", integ["app"], "observe_only"),  # a str: the caller found the app by it
                         f"an observe_only app is watched through its tenant's monitor_app, and tenant "
                         f"{app['tenant']!r} names none: set tenants.{app['tenant']}.monitor_app"))
    return problems


# -- messages a person reads: pydantic's own phrases ("Input should be ...") in plain English ------------------
_PLAIN = {
    "missing": "required key is missing",
    "string_type": "must be text",
    "int_type": "must be a whole number", "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number", "float_parsing": "must be a number",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping (key: value lines)", "model_type": "must be a mapping (key: value lines)",
    "model_attributes_type": "must be a mapping (key: value lines)",
    "list_type": "must be a list ([a, b], or lines starting with '- ')",
    "date_type": "must be a date, YYYY-MM-DD", "date_parsing": "must be a date, YYYY-MM-DD",
    "date_from_datetime_parsing": "must be a date, YYYY-MM-DD", "date_from_datetime_inexact": "must be a date, "
                                                                                               "YYYY-MM-DD",
    "datetime_type": "must be a date and time, e.g. 2027-01-09T22:00:00+01:00",
    "datetime_parsing": "must be a date and time, e.g. 2027-01-09T22:00:00+01:00",
    "datetime_from_date_parsing": "must be a date and time, e.g. 2027-01-09T22:00:00+01:00",
    "none_required": "must be left empty",
    "invalid_key": "a key here must be a name (text)",
    "greater_than_equal": "must be at least {ge}", "less_than_equal": "must be at most {le}",
    "greater_than": "must be more than {gt}", "less_than": "must be less than {lt}",
    "string_too_short": "must be at least {min_length} character(s) long",
    "string_too_long": "must be at most {max_length} characters long",
    "too_short": "must hold at least {min_length} item(s)", "too_long": "must hold at most {max_length} item(s)",
}


_QUOTED = r"'([^']*)'"


def _message(err: Any, root: type[BaseModel] = BaseModel) -> str:
    """A pydantic error in plain English; an unknown key or a value off a fixed list names the closest known one.
    ``root``: the model ``err["loc"]`` starts at."""
    kind, ctx, loc = err["type"], err.get("ctx") or {}, tuple(err["loc"])
    if kind == "extra_forbidden":
        model = _model_at(root, loc[:-1])
        hint = _suggest(loc[-1], model.model_fields) if model else ""
        return "unknown key" + (hint or " (check its spelling and indentation)")
    if loc and loc[-1] == "[key]":
        return f"{loc[-2]!r} is no name: a key here must be text"
    if kind == "literal_error":
        expected, given = str(ctx.get("expected", "one of the listed values")), err.get("input")
        if not isinstance(given, str):
            return f"must be {expected}"
        return f"must be {expected}, not {given!r}{_suggest(given, re.findall(_QUOTED, expected))}"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == NAME_PATTERN:
        return "must start with a letter or digit and hold only letters, digits, '.', '_' and '-' (at most 100)"
    if kind == "string_pattern_mismatch":
        return "is not in the expected form"
    if kind in _PLAIN:
        try:
            return _PLAIN[kind].format(**ctx)
        except (KeyError, IndexError, ValueError):
            pass
    msg = re.sub(r"^(Value error|Assertion failed), ", "", str(err["msg"]))
    return msg.replace("Input should be", "must be").replace("Input", "The value")


def _model_at(root: Any, loc: Loc) -> type[BaseModel] | None:
    """The model that holds the keys at ``loc`` under ``root`` (list indexes and mapping names stepped over)."""
    tp = root
    for part in loc:
        tp = _step(_strip(tp), part)
        if tp is None:
            return None
    tp = _strip(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _strip(tp: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` -> X."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(inner) != 1:
                return tp
            tp = inner[0]
        else:
            return tp


def _step(tp: Any, part: str | int) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field else None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list and args and isinstance(part, int):
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return None


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
    return load_with_warnings(path)[0]


def load_with_warnings(path: str | Path) -> tuple[Config, list[str]]:
    """``load``, and what is valid but will not work as meant (``warnings``), each with key path and line."""
    cfg, notes, _suggested = load_with_notes(path)
    return cfg, notes


def load_with_notes(path: str | Path) -> tuple[Config, list[str], list[str]]:
    """``load``, its ``warnings``, and ``suggestions`` (what would make the monitoring better; never a problem),
    each with key path and line."""
    path = Path(path)
    doc = _read(path)
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping (key: value)", where=f"{path}, line 1")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        found: list[Problem] = []
        cross: list[Problem] | None = None
        for err in exc.errors():
            inner = (err.get("ctx") or {}).get("error")
            if isinstance(inner, _CrossRefError):
                cross = inner.problems
            else:
                loc = tuple(err["loc"])
                found.append((loc[:-1] if loc[-1:] == ("[key]",) else loc, _message(err, Config)))
        if cross is None:  # some key is invalid, so pydantic did not look at the names: look here, in the same run
            cross = _cross_references(data)
        found += [p for p in cross if p not in found]
        found.sort(key=lambda p: doc.line_of(p[0]) or 0)
        problems = [_problem(doc, loc, msg) for loc, msg in found]
        raise ConfigError(f"{len(problems)} problem(s) in the configuration", where=str(path),
                          problems=problems) from None
    cfg.base_dir = path.resolve().parent

    def placed(found: list[Problem]) -> list[str]:
        out = []
        for loc, msg in found:
            line = doc.lines.get(loc)
            out.append(f"{yamlpos.format_loc(loc)} (line {line}): {msg}" if line else
                       f"{yamlpos.format_loc(loc)}: {msg}")
        return out

    return cfg, placed(warnings(cfg)), placed(suggestions(cfg))


def _read(path: Path) -> yamlpos.PositionedYaml:
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
        return yamlpos.load(text, str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        refused = "refused YAML" if isinstance(exc, yamlpos.LimitError) else "malformed YAML"
        raise ConfigError(f"{refused}: {problem}", where=where) from None


RECEIVING = ("imap", "pop", "ews", "graph_mail")  # the checks that read a mailbox's waiting mail (backlog_age)


def warnings(cfg: Config) -> list[Problem]:
    """What is valid but will not work as meant: IMAP's or Graph's old ``backlog_warn`` (it warns and never opens an
    incident, where ``backlog_age`` does after its grace); links (alerts carry the dashboard's and reauthorisation
    links; delegated integrations get reauthorisation links and the sign-in redirect) to a ``web.base_url`` that is
    unset or loopback, which opens for nobody but this machine."""
    found: list[Problem] = []
    for i, integ in enumerate(cfg.integrations):
        for kind in ("imap", "graph_mail"):
            opts = integ.checks.get(kind) or {}
            if "backlog_warn" in opts and "backlog_grace" not in opts:
                found.append((("integrations", i, "checks", kind, "backlog_warn"),
                              f"the old name of backlog_age: as written it only warns, however long mail waits. "
                              f"Write backlog_age: {opts['backlog_warn']} for a failure (an incident) once mail has "
                              f"waited backlog_grace (default 1h) longer: the consuming system stopped collecting"))
    delegated = any(i.flow == "delegated" for i in cfg.integrations)
    if not (cfg.alerts.active() or delegated) or not _loopback(cfg.web.base_url):
        return found
    links = " and ".join(w for w, on in (("the links in alerts", cfg.alerts.active()),
                                         ("the reauthorisation links and their sign-in redirect", delegated)) if on)
    state = (f"{cfg.web.base_url} is" if "base_url" in cfg.web.model_fields_set
             else f"it is not set, and its default {LOOPBACK_BASE_URL} is")
    return [*found, (("web", "base_url"),
                     f"{state} an address only this machine reaches: {links} will not open for anyone else. Set "
                     "web.base_url to the address people open mailwarden at, e.g. base_url: "
                     "https://mailwarden.contoso.com (and register <base_url>/auth/callback on the delegated apps)")]


def suggestions(cfg: Config) -> list[Problem]:
    """What would make the monitoring better, never a problem: ``backlog_age`` on a delegated integration's receiving
    check. A delegated consuming system can lose its own sign-in while mailwarden's token stays good; mail waiting in
    the mailbox shows it in every Entra ID edition (the sign-in log needs P1/P2)."""
    found: list[Problem] = []
    for i, integ in enumerate(cfg.integrations):
        if integ.flow != "delegated" or integ.paused:
            continue
        for kind in RECEIVING:
            opts = integ.checks.get(kind)
            if opts is not None and "backlog_age" not in opts and not (kind != "pop" and "backlog_warn" in opts):
                found.append((("integrations", i, "checks", kind),
                              f"set backlog_age (e.g. {{backlog_age: 2h}}): mail waiting longer than that warns, and "
                              f"past backlog_grace more it fails, when {integ.system or 'the consuming system'} "
                              f"stops collecting while mailwarden's own sign-in still works"))
    return found


def _loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the configuration file, for editors (``mailwarden schema``): every key with its description,
    durations as the strings the loader takes, the shorthand forms the loader takes (``checks: [token, pop]``)."""
    doc = Config.model_json_schema()
    doc.pop("title", None)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "mailwarden configuration", **doc}


def text_line_of(path: Path, offset: int) -> int:
    return path.read_bytes()[:offset].count(b"\n") + 1


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
