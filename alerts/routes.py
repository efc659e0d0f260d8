"""Routes: which Apprise services a notice goes to, and sending one message to one service.

A route is an entry of ``alerts.routes`` (Apprise URLs, or an Apprise YAML/TEXT config file) or an owner
route built from ``alerts.owner_route`` for each owner of the affected integrations. A route takes a
notice when each filter it sets matches (integration tags, severity, check kind); ``default`` routes take
only what no other route took. Deliveries name a route and a service index, never a URL: Apprise URLs
hold credentials, so they stay in the config and are resolved at send time.

Apprise's own retry is forced off: mailwarden retries with its own backoff (one policy).

A route's ``timeout`` is how long each of its services may take to connect and to answer: Apprise's ``cto`` and ``rto``
(4 s each by default; a service URL's own ``?cto=``/``?rto=`` win). A send that wrote its request and then timed out
waiting for the answer (a read timeout, or Apprise giving up on a service still running) is *unconfirmed*: the
receiver may have it, so it is not sent again (sending again is how a slow webhook received six copies); a connection
that was refused or could not be made in time is an ordinary failure, retried. The transport's exception is seen
where ``requests`` raises it (``_watch``): Apprise's plugins catch it and log one wording for every kind.
"""

from __future__ import annotations

import sys
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

import apprise
from apprise import AppriseResultStatus, NotifyFormat

from mailwarden.alerts import inert
from mailwarden.alerts.ports import AlertConfig, RouteSettings
from mailwarden.redact import redact

OWNER_PREFIX = "owner:"


@apprise.decorators.notify(on="console", name="mailwarden console")
def _console(body: str, title: str, notify_type: str, *args: object, **kwargs: object) -> bool:
    """``console://``: print the alert on mailwarden's stderr (the demo's default route)."""
    sys.stderr.write(f"\n=== {title} ===\n{body}\n")
    sys.stderr.flush()
    return True


def route_name(route: RouteSettings, index: int) -> str:
    return route.name or f"routes[{index}]"


def configured(config: AlertConfig) -> dict[str, RouteSettings]:
    return {route_name(r, i): r for i, r in enumerate(config.alerts.routes)}


def _wants(route: RouteSettings, tags: set[str], severity: str | None, kinds: set[str]) -> bool:
    if route.tags and not set(route.tags) & tags:
        return False
    if route.severity and severity not in route.severity:
        return False
    return not (route.checks and not set(route.checks) & kinds)


def choose(config: AlertConfig, *, integrations: set[str], severity: str | None, kinds: set[str]) -> list[str]:
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


def timeout_of(config: AlertConfig, name: str) -> float | None:
    """The route's ``timeout`` (seconds), None when it sets none (an owner route: Apprise's defaults)."""
    route = configured(config).get(name)
    value = getattr(route, "timeout", None) if route is not None else None
    return float(value) if value else None


def longest_send(config: AlertConfig) -> float:
    """The longest a send through any route may take by its timeouts (connect, then answer), at least Apprise's
    defaults: what a delivery's claim must outlast."""
    longest = max([timeout_of(config, n) or 0.0 for n in configured(config)] + [DEFAULT_TIMEOUT])
    return 2 * longest


def services(config: AlertConfig, name: str) -> list[str | object]:
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
            servers = (ac.services if hasattr(ac, "services") else ac.servers)()  # type: ignore[attr-defined]
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
    unconfirmed: bool = False  # the request went out, its answer did not come: not sent again


# -- the transport: what kind of failure a send met ------------------------------------------------------------------
DEFAULT_TIMEOUT = 4.0  # Apprise's socket_connect_timeout and socket_read_timeout
READ_TIMEOUT = "read timeout"
EARLY_TIMEOUT = "read timeout of a request before the message (e.g. a token)"


class _Watch:
    """What the transport met during one send: the kinds of failure, in order. A read timeout counts as one after the
    message was written only for a request that carried the message (its stable key in the body, as the plugin
    encoded it): a service that fetches a token first and times out on that has sent nothing."""

    def __init__(self, key: str | None):
        self.seen: list[str] = []
        self.marks: list[bytes] = []
        if key:
            for form in (key, key.replace("/", "\\/"), quote(key, safe=""), quote_plus(key)):
                if form.encode() not in self.marks:
                    self.marks.append(form.encode())

    def add(self, exc: BaseException, request: object) -> None:
        kind = _transport_error(exc)
        if kind == READ_TIMEOUT and not self._carries(getattr(request, "body", None)):
            kind = EARLY_TIMEOUT
        self.seen.append(kind)

    def _carries(self, body: object) -> bool:
        if not self.marks:
            return True  # nothing to look for: it may have carried it
        if isinstance(body, str):
            body = body.encode("utf-8", "replace")
        if not isinstance(body, bytes):  # a stream, a file: cannot tell, so it may have carried it
            return body is not None
        return any(m in body for m in self.marks)


_SEEN: ContextVar[_Watch | None] = ContextVar("mailwarden_alert_transport", default=None)


def _transport_error(exc: BaseException) -> str:
    """What a ``requests`` exception says about the request, in words that hold no URL (a webhook's path can be its
    credential): ``READ_TIMEOUT`` when the request was written and no answer came in time."""
    import requests

    if isinstance(exc, requests.exceptions.ReadTimeout):
        return READ_TIMEOUT
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error"
    if any(isinstance(c, ConnectionRefusedError) or "connection refused" in str(c).lower() for c in _causes(exc)):
        return "connection refused"
    return f"connection failed ({type(exc).__name__})"


def _causes(exc: BaseException):
    """``exc`` and what it wraps (urllib3's ``reason``, ``__cause__``, ``__context__``, exceptions in its args)."""
    todo: list[object] = [exc]
    seen: set[int] = set()
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [getattr(e, "reason", None), e.__cause__, e.__context__, *e.args]


def _watch() -> None:
    """See the exceptions ``requests`` raises during a send (``send`` sets ``_SEEN``): Apprise's HTTP plugins catch
    them and log the same wording for a refused connection and for a receiver that got the request and did not answer
    in time. Outside a send nothing is recorded; the exception is raised on as it was."""
    from requests import adapters

    real = adapters.HTTPAdapter.send
    if getattr(real, "_mailwarden_watch", False):
        return

    def send(self, request, *args, **kwargs):
        try:
            return real(self, request, *args, **kwargs)
        except Exception as exc:
            watch = _SEEN.get()
            if watch is not None:
                watch.add(exc, request)
            raise

    send._mailwarden_watch = True  # type: ignore[attr-defined]
    adapters.HTTPAdapter.send = send  # type: ignore[method-assign]


_watch()


def _set_timeout(plugin: object, timeout: float | None) -> float:
    """The route's timeout as the service's connect and read timeouts (Apprise's cto and rto), unless its URL sets its
    own; Apprise's deadline for the whole service call (Apprise 2) is kept beyond both. The read timeout in force."""
    for attr in ("socket_connect_timeout", "socket_read_timeout"):
        if timeout and hasattr(plugin, attr) and attr not in vars(plugin):  # set in the URL: ?cto= / ?rto=
            setattr(plugin, attr, float(timeout))
    cto = float(getattr(plugin, "socket_connect_timeout", DEFAULT_TIMEOUT) or DEFAULT_TIMEOUT)
    rto = float(getattr(plugin, "socket_read_timeout", DEFAULT_TIMEOUT) or DEFAULT_TIMEOUT)
    service_asset = getattr(plugin, "asset", None)
    deadline = getattr(service_asset, "_service_timeout", None)
    if deadline:  # 0: none. Apprise giving up while the request is under way would leave the send unconfirmed
        service_asset._service_timeout = max(float(deadline), 2 * (cto + rto) + 10.0)  # type: ignore[union-attr]
    return rto


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


def send(target: str | object, *, title: str, text: str, markdown: str, notify_type: str,
         timeout: float | None = None, key: str | None = None) -> SendOutcome:
    """One message to one service. ``timeout``: the route's (connect and answer, each); None keeps Apprise's.
    ``key``: the message's stable key (in its title and body), which tells the request that carried it."""
    plugin = _plugin(target)
    if plugin is None:
        scheme = str(target).split("://", 1)[0]
        return SendOutcome(False, redact(scheme + "://..."), "invalid Apprise URL, or no Apprise service for "
                           f"the scheme {scheme!r}", permanent=True)
    plugin.retry = 0
    shown = redact(plugin.url(privacy=True))
    rto = _set_timeout(plugin, timeout)
    rich = body_format(plugin) in (NotifyFormat.MARKDOWN, NotifyFormat.HTML)
    if rich and _title_in_body(plugin):  # Apprise converts such a title with the body: markdown, like it
        title = inert.md_escape(title)
    ap = apprise.Apprise(asset=asset())
    ap.add(plugin)
    watch = _Watch(key)
    watching = _SEEN.set(watch)
    try:
        result = ap.notify(body=markdown if rich else text, title=title, notify_type=notify_type,
                           body_format=NotifyFormat.MARKDOWN if rich else NotifyFormat.TEXT)
    except Exception as exc:  # noqa: BLE001 - a plugin bug is a failed attempt, not a crash
        return SendOutcome(False, shown, redact(f"{type(exc).__name__}: {exc}"))
    finally:
        _SEEN.reset(watching)
    status = getattr(result, "status", AppriseResultStatus.SUCCESS if result else AppriseResultStatus.FAILURE)
    if status == AppriseResultStatus.SUCCESS:
        return SendOutcome(True, shown)
    if status == AppriseResultStatus.NOMATCH:
        return SendOutcome(False, shown, "no Apprise service matched", permanent=True)
    seen = watch.seen
    if READ_TIMEOUT in seen or status == getattr(AppriseResultStatus, "TIMEOUT", None):
        waited = f"within {rto:g} s" if READ_TIMEOUT in seen else "before Apprise stopped waiting for it"
        return SendOutcome(False, shown, f"unconfirmed: the request was sent, but {shown} gave no answer {waited}; "
                           "not sent again, as it may have arrived", unconfirmed=True)
    logs = [e.message for r in getattr(result, "results", ()) for a in r for e in a
            if e.level in ("WARNING", "ERROR", "CRITICAL")]
    error = "; ".join(logs[-3:]) or f"Apprise reported {getattr(status, 'name', status)}"
    if seen:
        error = f"{error} ({', '.join(dict.fromkeys(seen))})"
    return SendOutcome(False, shown, redact(error)[:1000])
