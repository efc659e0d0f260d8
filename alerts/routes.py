"""Routes: which Apprise services a notice goes to, and sending one message to one service.

A route is an entry of ``alerts.routes`` (Apprise URLs, or an Apprise YAML/TEXT config file) or an owner
route built from ``alerts.owner_route`` for each owner of the affected integrations. A route takes a
notice when each filter it sets matches (integration tags, severity, check kind); ``default`` routes take
only what no other route took. Deliveries name a route and a service index, never a URL: Apprise URLs
hold credentials, so they stay in the config and are resolved at send time.

Apprise's own retry is forced off: mailwarden retries with its own backoff (one policy).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import apprise
from apprise import AppriseResultStatus, NotifyFormat

from mailwarden.alerts import inert
from mailwarden.monitor.config import Config, RouteConfig
from mailwarden.redact import redact

OWNER_PREFIX = "owner:"


@apprise.decorators.notify(on="console", name="mailwarden console")
def _console(body: str, title: str, notify_type: str, *args: object, **kwargs: object) -> bool:
    """``console://``: print the alert on mailwarden's stderr (the demo's default route)."""
    sys.stderr.write(f"\n=== {title} ===\n{body}\n")
    sys.stderr.flush()
    return True


def route_name(route: RouteConfig, index: int) -> str:
    return route.name or f"routes[{index}]"


def configured(config: Config) -> dict[str, RouteConfig]:
    return {route_name(r, i): r for i, r in enumerate(config.alerts.routes)}


def _wants(route: RouteConfig, tags: set[str], severity: str | None, kinds: set[str]) -> bool:
    if route.tags and not set(route.tags) & tags:
        return False
    if route.severity and severity not in route.severity:
        return False
    return not (route.checks and not set(route.checks) & kinds)


def choose(config: Config, *, integrations: set[str], severity: str | None, kinds: set[str]) -> list[str]:
    """Route names for a notice about ``integrations`` (their tags and owners), severity and check kinds."""
    known = {i.name: i for i in config.integrations}
    tags = {t for n in integrations if n in known for t in known[n].tags}
    owners = sorted({o for n in integrations if n in known for o in known[n].owners})
    routes = configured(config)
    chosen = [n for n, r in routes.items() if not r.default and _wants(r, tags, severity, kinds)]
    if not chosen:
        chosen = [n for n, r in routes.items() if r.default and _wants(r, tags, severity, kinds)]
    if config.alerts.owner_route:
        chosen += [OWNER_PREFIX + o for o in owners]
    return chosen


def asset() -> apprise.AppriseAsset:
    return apprise.AppriseAsset(default_service_retry=0, async_mode=False)


def services(config: Config, name: str) -> list[str | object]:
    """The service URLs (or, for a config file, Apprise plugin objects) of one route, in a stable order.

    Raises LookupError when the route is gone or its config file cannot be read."""
    if name.startswith(OWNER_PREFIX):
        template = config.alerts.owner_route
        if not template:
            raise LookupError("alerts.owner_route is no longer configured")
        return [template.replace("{owner}", quote(name[len(OWNER_PREFIX):], safe="@"))]
    route = configured(config).get(name)
    if route is None:
        raise LookupError(f"route {name!r} is no longer in the configuration")
    out: list[str | object] = list(route.all_urls())
    if route.config:
        path = config.path(route.config)
        if not Path(path).is_file():
            raise LookupError(f"route {name!r}: Apprise config file {path} cannot be read")
        ac = apprise.AppriseConfig(asset=asset())
        ac.add(str(path))
        try:  # Apprise 2 renamed AppriseConfig.servers() to services(); 1.9 has only servers()
            servers = (ac.services if hasattr(ac, "services") else ac.servers)()
        except Exception as exc:  # noqa: BLE001 - a config file Apprise cannot read is this route's problem only
            raise LookupError(f"route {name!r}: Apprise config file {path} cannot be used: "
                              f"{type(exc).__name__}: {exc}") from None
        if not servers:
            raise LookupError(f"route {name!r}: Apprise config file {path} holds no usable service URL")
        out += servers
    return out


@dataclass
class SendOutcome:
    ok: bool
    service: str  # masked
    error: str | None = None
    permanent: bool = False


def _plugin(target: str | object):
    if isinstance(target, str):
        return apprise.Apprise.instantiate(target, asset=asset())
    return target


def display(target: str | object) -> str:
    plugin = _plugin(target)
    if plugin is None:
        return redact(str(target).split("://", 1)[0] + "://...")
    return redact(plugin.url(privacy=True))


def body_format(plugin: object) -> NotifyFormat:
    """The format the service renders this delivery in: its URL's ``?format=`` when the service takes it, else its
    default. A markdown or HTML service gets the markdown body (Apprise converts it to HTML where needed: its
    escapes become entities), a text service the plain-text body; never plain text read as markup."""
    resolve = getattr(plugin, "resolve_format", None)
    if resolve is not None:  # Apprise 2: multi-format services, per-URL overrides
        return NotifyFormat(resolve(None))
    formats = plugin.notify_format if isinstance(plugin.notify_format, tuple) else (plugin.notify_format,)  # type: ignore[attr-defined]
    return NotifyFormat(formats[0])


def _title_in_body(plugin: object) -> bool:
    """The service has no title field: Apprise puts the title into the body, converted like the body."""
    try:
        return int(getattr(plugin, "title_maxlen", 0) or 0) <= 0
    except (TypeError, ValueError):
        return True


def send(target: str | object, *, title: str, text: str, markdown: str, notify_type: str) -> SendOutcome:
    plugin = _plugin(target)
    if plugin is None:
        scheme = str(target).split("://", 1)[0]
        return SendOutcome(False, redact(scheme + "://..."), "invalid Apprise URL, or no Apprise service for "
                           f"the scheme {scheme!r}", permanent=True)
    plugin.retry = 0
    shown = redact(plugin.url(privacy=True))
    rich = body_format(plugin) in (NotifyFormat.MARKDOWN, NotifyFormat.HTML)
    if rich and _title_in_body(plugin):  # Apprise converts such a title with the body: markdown, like it
        title = inert.md_escape(title)
    ap = apprise.Apprise(asset=asset())
    ap.add(plugin)
    try:
        result = ap.notify(body=markdown if rich else text, title=title, notify_type=notify_type,
                           body_format=NotifyFormat.MARKDOWN if rich else NotifyFormat.TEXT)
    except Exception as exc:  # noqa: BLE001 - a plugin bug is a failed attempt, not a crash
        return SendOutcome(False, shown, redact(f"{type(exc).__name__}: {exc}"))
    status = getattr(result, "status", AppriseResultStatus.SUCCESS if result else AppriseResultStatus.FAILURE)
    if status == AppriseResultStatus.SUCCESS:
        return SendOutcome(True, shown)
    if status == AppriseResultStatus.NOMATCH:
        return SendOutcome(False, shown, "no Apprise service matched", permanent=True)
    logs = [e.message for r in getattr(result, "results", ()) for a in r for e in a
            if e.level in ("WARNING", "ERROR", "CRITICAL")]
    error = "; ".join(logs[-3:]) or f"Apprise reported {getattr(status, 'name', status)}"
    return SendOutcome(False, shown, redact(error)[:1000])
