"""What a result tells the diagnosis catalog about an integration: the facts its fix steps are chosen by and filled
in with (``checks.diagnoses.Step``), read the same way by the alerts, the dashboard and `mailwarden check --format
json`. Never a secret: names, ids, addresses, counts, dates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date
from typing import TYPE_CHECKING, Any, Protocol

from mailwarden.checks import TOKEN_KIND, diagnoses, permissions
from mailwarden.outcome import Outcome

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mailwarden.endpoints import Endpoints


class FactsIntegration(Protocol):
    """One integration as configured (monitor.config.IntegrationConfig), as the facts read it."""

    @property
    def name(self) -> str: ...
    @property
    def app(self) -> str: ...
    @property
    def tenant(self) -> str | None: ...
    @property
    def flow(self) -> str: ...
    @property
    def checks(self) -> Mapping[str, Any]: ...
    @property
    def system(self) -> str | None: ...
    @property
    def mailbox(self) -> str: ...
    @property
    def account(self) -> str | None: ...
    @property
    def secret_field(self) -> str | None: ...
    @property
    def reauth_after_rotation(self) -> bool: ...


class FactsApp(Protocol):
    @property
    def tenant(self) -> str: ...
    @property
    def client_id(self) -> str: ...
    @property
    def display_name(self) -> str | None: ...
    @property
    def observe_only(self) -> bool: ...


class FactsTenant(Protocol):
    @property
    def tenant_id(self) -> str: ...
    @property
    def monitor_app(self) -> str | None: ...


class FactsWeb(Protocol):
    @property
    def base_url(self) -> str: ...


class FactsConfig(Protocol):
    """What the facts read of the whole configuration (monitor.config.Config)."""

    @property
    def apps(self) -> Mapping[str, FactsApp]: ...
    @property
    def tenants(self) -> Mapping[str, FactsTenant]: ...
    @property
    def web(self) -> FactsWeb: ...

    def endpoints_resolved(self) -> Endpoints: ...


def facts(config: FactsConfig, integ: FactsIntegration, outcome: Outcome | None = None,
          check: str | Iterable[str] | None = None) -> dict[str, str | None]:
    """What the diagnosis texts may name about an integration and one result of it (never a secret), and what the
    catalog chooses its steps by (checks.diagnoses.Step). ``check``: the kind(s) of the result's check when the
    caller knows them; else read from the result's metrics; else every check of the integration (the catalog keeps
    those that can return the code, each step labelled with what it is for)."""
    app = config.apps.get(integ.app)
    tenant_name = (integ.tenant or app.tenant) if app else None
    tenant = config.tenants.get(tenant_name or "")  # the integration's: its tokens and mailbox
    home = config.tenants.get(app.tenant) if app else None  # the app's own: its credentials, read by its monitor app
    metrics = outcome.metrics if outcome else {}
    summary = outcome.summary if outcome else ""
    code = outcome.code if outcome else None
    if isinstance(check, str):
        kinds = [k for k in check.split(",") if k]
    elif check:
        kinds = list(check)
    else:  # what only one kind of check records
        phases = set(metrics.get("phases_ms") or {})
        guessed = ("consumer" if "signin_state" in metrics else  # every result of the consumer check says it
                   TOKEN_KIND if "needed_by" in metrics or "tokens" in metrics else
                   "smtp" if "login_as" in metrics else
                   "graph_mail" if "graph_code" in metrics or phases & {"inbox", "sendMail"} else
                   "ews" if "getfolder" in phases or "response_code" in metrics or "notice" in metrics else
                   "imap" if "select" in phases else "pop" if "stat" in phases else
                   "secret_expiry" if "source" in metrics or "credentials_on_app" in metrics else None)
        kinds = [guessed] if guessed is not None and guessed in integ.checks else list(integ.checks)

    # the permission the result is about, with where an admin adds it (API and type) and never a weaker one
    require = list((integ.checks.get(TOKEN_KIND) or {}).get("require") or [])
    found = permissions.find(integ.flow, list(integ.checks), require, str(metrics.get("permission") or ""))
    if found is not None:
        needs = [found]
    elif metrics.get("needed_by") in integ.checks:  # a result stored before the need changed
        needs = permissions.needs(integ.flow, [metrics["needed_by"]])
    else:
        needs = (permissions.needs(integ.flow, kinds, require if TOKEN_KIND in kinds else ())
                 or permissions.needs(integ.flow, list(integ.checks), require))
    grants = list(dict.fromkeys(n.grant for n in needs))
    paths = list(dict.fromkeys(permissions.portal_path(n.resource, n.grant, integ.flow) for n in needs))

    detail = summary or None
    if code == "auth_failed" and " (likely: " in summary:  # the catalog gives the causes from these facts
        detail = summary[:summary.index(" (likely: ")]
    # secret_expiry: why the monitor app read nothing (monitor.credentials words its reason)
    monitor = home.monitor_app if home else None
    monitor_app = config.apps.get(monitor or "")
    reason, monitor_code, problem = None, None, None
    if code == "graph_unreadable":
        aadsts = re.search(r"got no Graph token \(AADSTS(\d+)", summary)
        if "names no monitor_app" in summary or not monitor:
            reason = "no_monitor_app"
        elif aadsts:
            reason, monitor_code = "monitor_token", diagnoses.classify_aadsts([int(aadsts.group(1))])
            problem = f"AADSTS{aadsts.group(1)}: {diagnoses.get(monitor_code).title}"
        elif "'s Graph token:" in summary:
            reason, monitor_code, problem = "monitor_token", "unknown", summary
        elif "needs Application.Read.All" in summary:
            reason = "forbidden"
    retires = date.fromisoformat(metrics["retires_on"]) if metrics.get("retires_on") else None
    return {
        "system": integ.system, "integration": integ.name, "mailbox": integ.mailbox, "account": integ.account,
        "flow": integ.flow, "check": ",".join(kinds),
        "client_id": app.client_id if app else None, "app": (app.display_name or integ.app) if app else integ.app,
        "tenant_id": tenant.tenant_id if tenant else None, "tenant": tenant_name,
        # a multitenant app used outside its home tenant: where it is registered
        "home_tenant_id": home.tenant_id if home and app and tenant_name != app.tenant else None,
        "consent_url": (f"{config.endpoints_resolved().authority_for(tenant.tenant_id)}/adminconsent?client_id="
                        f"{app.client_id}") if tenant and app else None,
        "secret_field": integ.secret_field,
        "copy": ("none" if app.observe_only else "held") if app else None,
        "reauth_after_rotation": "yes" if integ.reauth_after_rotation else "no",
        "permission": " and ".join(grants) or metrics.get("permission"), "permission_path": "; ".join(paths) or None,
        "token_checked": "yes" if TOKEN_KIND in integ.checks else "no",
        "days_left": str(metrics["days_left"]) if metrics.get("days_left") is not None else None,
        "days_words": metrics.get("days_words"),
        "expires_on": (metrics.get("expires_at") or "")[:10] or None,
        "retires_on": f"{retires.day} {retires:%B %Y}" if retires else None,
        "detail": detail,
        "login": metrics.get("login_as") or (integ.account if integ.flow == "delegated" and "smtp" in kinds
                                             else integ.mailbox),
        "sender": (integ.checks.get("smtp") or {}).get("canary_from") or integ.mailbox,
        "callback_url": config.web.base_url.rstrip("/") + "/auth/callback",
        "ews_retirement": "yes" if "ews" in integ.checks and config.endpoints_resolved().exchange_online else None,
        "graph_reason": reason, "monitor_code": monitor_code, "monitor_problem": problem,
        "monitor_app": (monitor_app.display_name or monitor) if monitor_app else monitor,
        "monitor_client_id": monitor_app.client_id if monitor_app else None,
    }
