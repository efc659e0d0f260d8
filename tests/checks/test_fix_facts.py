"""checks.facts.facts: what a result tells the catalog, read the way the dashboard and `check --format json` call it
(no check kind passed: read from what only one kind of check records), and the token check's needs: never satisfied
by a weaker permission than the consuming system's."""

from __future__ import annotations

import pytest

from mailwarden.checks import permissions
from mailwarden.checks.base import Outcome, Status
from mailwarden.checks.facts import facts
from mailwarden.monitor.config import Config


def config(flow: str, checks: dict) -> Config:
    integ = {"name": "i", "app": "app", "flow": flow, "mailbox": "support@contoso.com", "checks": checks}
    if flow == "delegated":
        integ["account"] = "svc@contoso.com"
    return Config.model_validate({
        "tenants": {"t": {"tenant_id": "11111111-2222-3333-4444-555555555555"}},
        "apps": {"app": {"tenant": "t", "client_id": "66666666-7777-8888-9999-000000000000", "secret": "env:S"}},
        "integrations": [integ]})


ALL = {"token": {}, "imap": {}, "pop": {}, "smtp": {}, "graph_mail": {}, "ews": {}, "secret_expiry": {},
       "consumer": {}}


@pytest.mark.parametrize(("metrics", "kind"), [
    ({"tokens": {}, "permission": "POP.AccessAsApp", "needed_by": "pop"}, "token"),
    ({"login_as": "support@contoso.com", "phases_ms": {"auth": 1.0}}, "smtp"),
    ({"http_status": 403, "graph_code": "ErrorAccessDenied", "phases_ms": {}}, "graph_mail"),
    ({"http_status": 403, "phases_ms": {"getfolder": 9.0}}, "ews"),
    ({"phases_ms": {"connect": 1.0, "auth": 2.0, "select": 3.0}}, "imap"),
    ({"phases_ms": {"connect": 1.0, "auth": 2.0, "stat": 3.0}}, "pop"),
    ({"source": "graph", "days_left": 3}, "secret_expiry"),
    ({"signin_state": "ok", "consumer_code": 7000222, "flow": "app"}, "consumer"),
    ({"signin_state": "pending", "note": None}, "consumer"),
    # nothing only one kind records: every check of the integration
    ({"error_codes": [50173]}, "token,imap,pop,smtp,graph_mail,ews,secret_expiry,consumer"),
])
def test_the_results_check_is_read_from_what_only_it_records(metrics, kind):
    got = facts(config("app", ALL), config("app", ALL).integrations[0], Outcome(Status.FAIL, "x", "", metrics=metrics))
    assert got["check"] == kind


@pytest.mark.parametrize(("flow", "kind", "permission", "path"), [
    ("app", "graph_mail", "Mail.ReadWrite", "Microsoft Graph > Application permissions > Mail.ReadWrite"),
    ("delegated", "graph_mail", "Mail.ReadWrite.Shared",
     "Microsoft Graph > Delegated permissions > Mail.ReadWrite.Shared"),
    ("app", "pop", "POP.AccessAsApp",
     "APIs my organization uses > Office 365 Exchange Online > Application permissions > POP.AccessAsApp"),
    ("delegated", "pop", "POP.AccessAsUser.All", "Microsoft Graph > Delegated permissions > POP.AccessAsUser.All"),
    ("app", "ews", "full_access_as_app",
     "APIs my organization uses > Office 365 Exchange Online > Application permissions > full_access_as_app"),
    ("delegated", "smtp", "SMTP.Send", "Microsoft Graph > Delegated permissions > SMTP.Send"),
])
def test_the_missing_permission_comes_with_its_api_and_type(flow, kind, permission, path):
    cfg = config(flow, {"token": {}, kind: {}})
    [need] = permissions.needs(flow, [kind])
    got = facts(cfg, cfg.integrations[0], Outcome(Status.FAIL, "consent_missing", "", metrics={
        "tokens": {}, "permission": need.label, "needed_by": kind}))
    assert (got["permission"], got["permission_path"]) == (permission, path)


def test_a_result_stored_with_the_old_weaker_alternatives_names_the_permission_needed_now():
    cfg = config("app", {"token": {}, "graph_mail": {}})
    got = facts(cfg, cfg.integrations[0], Outcome(Status.FAIL, "consent_missing", "", metrics={
        "tokens": {}, "permission": "Mail.Read or Mail.ReadBasic.All or Mail.ReadWrite", "needed_by": "graph_mail"}))
    assert got["permission"] == "Mail.ReadWrite"


@pytest.mark.parametrize(("flow", "weaker"), [("app", {"Mail.Read", "Mail.ReadBasic", "Mail.ReadBasic.All"}),
                                              ("delegated", {"Mail.Read", "Mail.Read.Shared", "Mail.ReadBasic"})])
def test_the_token_check_accepts_no_weaker_graph_permission_than_the_consumer_needs(flow, weaker):
    """A token with only Mail.ReadBasic.All turned mailwarden green while Sinch still lacked Mail.ReadWrite."""
    [need] = permissions.needs(flow, ["graph_mail"])
    assert not weaker & set(need.any_of), need.any_of


@pytest.mark.parametrize(("summary", "reason", "code"), [
    ("Graph could not be read (the monitor app m got no Graph token (AADSTS7000222: secret_expired)), ...",
     "monitor_token", "secret_expired"),
    ("Graph could not be read (the monitor app m got no Graph token (AADSTS700016: app_not_found)), ...",
     "monitor_token", "app_not_found"),
    ("Graph could not be read (Graph answered 403 Forbidden (monitor app m needs Application.Read.All)), ...",
     "forbidden", None),
    ("Graph could not be read (tenant t names no monitor_app to read Graph with), ...", "no_monitor_app", None),
])
def test_why_the_monitor_app_read_nothing(summary, reason, code):
    cfg = config("app", {"secret_expiry": {}})
    cfg.tenants["t"].monitor_app = "app"
    got = facts(cfg, cfg.integrations[0], Outcome(Status.ERROR, "graph_unreadable", summary, metrics={"source": None}))
    assert (got["graph_reason"], got["monitor_code"]) == (reason, code)
