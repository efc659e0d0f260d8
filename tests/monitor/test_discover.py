"""`mailwarden discover` (issue 17): the tenant's apps that can touch mail.

Part 1: the pure logic (permissions -> check kinds, the YAML) and the reads against a small fake of Graph's
documented replies (httpx MockTransport): paging, throttling, refusals. Part 2: end to end against the sandbox's
discovery scenario, compared with the sandbox's own state.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

from mailwarden.monitor import config as config_mod
from mailwarden.monitor import discover_model as m
from mailwarden.monitor.discover import Discovery, exit_code
from mailwarden.monitor.discover_yaml import render

TID = "11111111-2222-3333-4444-555555555555"
MONITOR = "12121212-3434-5656-7878-909090909090"
GRAPH = "https://graph.test/v1.0"


# -- pure: permissions -> check kinds -----------------------------------------------------------------------------
@pytest.mark.parametrize("flow,held,kinds,require", [
    ("app", [("exchange", "IMAP.AccessAsApp")], ["imap"], []),
    ("app", [("exchange", "POP.AccessAsApp"), ("exchange", "SMTP.SendAsApp")], ["pop", "smtp"], []),
    ("app", [("exchange", "full_access_as_app")], ["ews"], []),
    ("app", [("graph", "Mail.ReadWrite"), ("graph", "Mail.Send")], ["graph_mail"], ["graph:Mail.Send"]),
    # Mail.Read alone is not what the graph_mail check demands (Mail.ReadWrite): no check that would always fail
    ("app", [("graph", "Mail.Read")], [], ["graph:Mail.Read"]),
    # delegated protocol scopes are granted on Microsoft Graph in the portal, their tokens are Exchange's
    ("delegated", [("graph", "IMAP.AccessAsUser.All"), ("graph", "SMTP.Send")], ["imap", "smtp"], []),
    ("delegated", [("exchange", "POP.AccessAsUser.All")], ["pop"], []),
    ("delegated", [("graph", "Mail.ReadWrite.Shared")], ["graph_mail"], []),
    ("delegated", [("graph", "Mail.Read")], [], ["graph:Mail.Read"]),
    ("delegated", [("exchange", "EWS.AccessAsUser.All")], ["ews"], []),
])
def test_implied_checks(flow, held, kinds, require):
    perms = [m.Permission(r, n, flow) for r, n in held]
    assert m.implied(flow, perms) == (kinds, require)


@pytest.mark.parametrize("name,mail", [("IMAP.AccessAsApp", True), ("Mail.Send", True), ("full_access_as_app", True),
                                       ("SMTP.Send", True), ("MailboxSettings.Read", False), ("User.Read.All", False),
                                       ("Application.Read.All", False), ("Exchange.ManageAsApp", False)])
def test_is_mail_permission(name, mail):
    assert m.is_mail_permission(name) is mail


# -- a fake of Graph's documented replies --------------------------------------------------------------------------
def gid() -> str:
    return str(uuid.uuid4())


class FakeGraph:
    """Microsoft-shaped collections with $top/$skiptoken paging, 403 for a missing permission, page faults."""

    def __init__(self, roles=("Application.Read.All", "Directory.Read.All", "User.Read.All", "AuditLog.Read.All")):
        self.roles = set(roles)
        self.role_ids = {n: gid() for n in ("IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp",
                                            "full_access_as_app", "Mail.ReadWrite", "Mail.Send", "Mail.Read",
                                            "User.Read.All", "Exchange.ManageAsApp")}
        self.graph_sp = {"id": gid(), "appId": m.RESOURCE_APP_IDS["graph"], "displayName": "Microsoft Graph",
                         "appRoles": [{"id": self.role_ids[n], "value": n} for n in
                                      ("Mail.ReadWrite", "Mail.Send", "Mail.Read", "User.Read.All")],
                         "oauth2PermissionScopes": []}
        self.exo_sp = {"id": gid(), "appId": m.RESOURCE_APP_IDS["exchange"],
                       "displayName": "Office 365 Exchange Online",
                       "appRoles": [{"id": self.role_ids[n], "value": n} for n in
                                    ("IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp", "full_access_as_app",
                                     "Exchange.ManageAsApp")],
                       "oauth2PermissionScopes": []}
        self.sps = [dict(self.graph_sp, servicePrincipalType="Application", appOwnerOrganizationId=gid()),
                    dict(self.exo_sp, servicePrincipalType="Application", appOwnerOrganizationId=gid())]
        self.apps: list[dict] = []
        self.assigned: dict[str, list[dict]] = {self.graph_sp["id"]: [], self.exo_sp["id"]: []}
        self.grants: list[dict] = []
        self.users: dict[str, dict] = {}
        self.owners: dict[str, list[dict]] = {}
        self.fics: dict[str, list[dict]] = {}
        self.activity: list[dict] = []
        self.faults: dict[tuple[str, int], list[httpx.Response]] = {}  # (listing, request number) -> replies
        self.seen: dict[str, int] = {}
        self.requests = 0
        self.max_top = 999

    def app(self, name, *, roles=(), scopes=(), secrets=1, certs=0, fics=0, user=None, mi=False, home=None):
        """An app registration (or a managed identity / foreign app's service principal) with its grants."""
        app_id, sp_id = gid(), gid()
        sp = {"id": sp_id, "appId": app_id, "displayName": name, "accountEnabled": True,
              "servicePrincipalType": "ManagedIdentity" if mi else "Application",
              "appOwnerOrganizationId": None if mi else (home or TID)}
        self.sps.append(sp)
        if not mi and home is None:
            obj = gid()
            self.apps.append({
                "id": obj, "appId": app_id, "displayName": name, "publisherDomain": "contoso.onmicrosoft.com",
                "signInAudience": "AzureADMyOrg",
                "passwordCredentials": [{"keyId": gid(), "displayName": f"s{i}", "hint": f"h{i % 10}~",
                                         "secretText": None, "customKeyIdentifier": None,
                                         "startDateTime": "2026-01-01T00:00:00Z", "endDateTime": "2027-06-01T00:00:00Z"}
                                        for i in range(secrets)],
                "keyCredentials": [{"keyId": gid(), "displayName": "cert", "customKeyIdentifier": "AB" * 20,
                                    "type": "AsymmetricX509Cert", "usage": "Verify",
                                    "startDateTime": "2026-01-01T00:00:00Z", "endDateTime": "2026-02-01T00:00:00Z"}
                                   for _ in range(certs)]})
            self.owners[obj] = [{"@odata.type": "#microsoft.graph.user", "id": gid(), "displayName": "Owner",
                                 "userPrincipalName": "owner@contoso.com"}]
            self.fics[obj] = [{"id": gid(), "name": f"gh{i}", "issuer": "https://token.actions.githubusercontent.com",
                               "subject": "repo:contoso/x:ref:refs/heads/main", "audiences": ["api://AzureADTokenExchange"]}
                              for i in range(fics)]
        for res, role in roles:
            rsp = self.graph_sp if res == "graph" else self.exo_sp
            self.assigned[rsp["id"]].append({"id": gid(), "appRoleId": self.role_ids[role], "principalId": sp_id,
                                             "principalType": "ServicePrincipal", "principalDisplayName": name,
                                             "resourceId": rsp["id"]})
        for res, scope in scopes:
            rsp = self.graph_sp if res == "graph" else self.exo_sp
            uid = user["id"] if user else None
            if user:
                self.users[uid] = user
            self.grants.append({"id": gid(), "clientId": sp_id, "consentType": "Principal" if user else "AllPrincipals",
                                "principalId": uid, "resourceId": rsp["id"], "scope": f" {scope} "})
        self.activity.append({"id": gid(), "appId": app_id,
                              "lastSignInActivity": {"lastSignInDateTime": "2026-12-01T10:00:00Z"}})
        return app_id

    def _need(self, *any_of):
        return bool(self.roles & set(any_of))

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        url = urlsplit(str(request.url))
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        beta = path.startswith("/beta/")
        rest = path.split("/", 2)[2]
        listing = "resource" if rest == "servicePrincipals" and "$filter" in query else rest.rsplit("/", 1)[-1]
        n = self.seen[listing] = self.seen.get(listing, 0) + 1
        queued = self.faults.get((listing, n))
        if queued:
            return queued.pop(0) if len(queued) > 1 else queued[0]
        denied = httpx.Response(403, json={"error": {"code": "Authorization_RequestDenied",
                                                     "message": "Insufficient privileges to complete the operation."}})
        if beta:
            if not self._need("AuditLog.Read.All", "Directory.Read.All"):
                return denied
            return self._page(request, self.activity, query)
        if rest == "servicePrincipals" and "$filter" in query:
            if not self._need("Application.Read.All"):
                return denied
            want = query["$filter"].split("'")[1]
            return httpx.Response(200, json={"value": [s for s in (self.graph_sp, self.exo_sp) if s["appId"] == want]})
        if rest in ("servicePrincipals", "applications"):
            if not self._need("Application.Read.All"):
                return denied
            return self._page(request, self.sps if rest == "servicePrincipals" else self.apps, query)
        if rest.endswith("/appRoleAssignedTo"):
            if not self._need("Application.Read.All"):
                return denied
            return self._page(request, self.assigned[rest.split("/")[1]], query)
        if rest == "oauth2PermissionGrants":
            if not self._need("Directory.Read.All"):
                return denied
            res = query["$filter"].split("'")[1]
            return self._page(request, [g for g in self.grants if g["resourceId"] == res], query)
        if rest.startswith("applications/"):
            obj = rest.split("/")[1]
            return self._page(request, (self.owners if listing == "owners" else self.fics).get(obj, []), query)
        if rest.startswith("users/"):
            if not self._need("User.Read.All"):
                return denied
            u = self.users.get(rest.split("/")[1])
            return httpx.Response(200, json=u) if u else httpx.Response(404, json={"error": {"code": "NotFound"}})
        return httpx.Response(400, json={"error": {"code": "BadRequest", "message": f"unknown {rest}"}})

    def _page(self, request, items, query):
        top, skip = min(int(query.get("$top", 100)), self.max_top), int(query.get("$skiptoken", 0))
        body = {"value": items[skip:skip + top]}
        if skip + top < len(items):
            body["@odata.nextLink"] = str(request.url.copy_merge_params({"$skiptoken": str(skip + top)}))
        return httpx.Response(200, json=body)


def config(tmp_path, extra_apps: dict | None = None, integrations: list | None = None) -> config_mod.Config:
    doc = {"cloud": "custom",
           "endpoints": {"authority": "https://login.test", "graph": GRAPH, "ca_bundle": "ca.pem"},
           "tenants": {"contoso": {"tenant_id": TID, "monitor_app": "mailwarden"}},
           "apps": {"mailwarden": {"tenant": "contoso", "client_id": MONITOR, "secret": "file:secrets/monitor"},
                    **(extra_apps or {})},
           "integrations": integrations or []}
    p = tmp_path / "mailwarden.yaml"
    p.write_text(yaml.safe_dump(doc))
    return config_mod.load(p)


class FakeTokens:
    def __init__(self, cfg, result=None):
        self.endpoints = SimpleNamespace(graph=GRAPH, graph_resource="https://graph.test", ca_bundle=None,
                                         authority="https://login.test",
                                         token_endpoint=lambda t: f"https://login.test/{t}/oauth2/v2.0/token")
        self.result = result or {"access_token": "eyJ.fake.token"}

    def app_token(self, app, resource):
        return self.result


def run(cfg, fake: FakeGraph, tokens=None, **reader):
    async def go():
        waits = []

        async def sleep(s):
            waits.append(s)

        async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
            d = Discovery(cfg, tokens or FakeTokens(cfg), reader_options={"sleep": sleep, **reader})
            out = await d.tenant(http, "contoso")
        return out, waits
    return asyncio.run(go())


@pytest.fixture
def world(tmp_path):
    fake = FakeGraph()
    ids = {
        "imap": fake.app("Helpdesk IMAP", roles=[("exchange", "IMAP.AccessAsApp"), ("exchange", "SMTP.SendAsApp")]),
        "sinch": fake.app("Sinch", roles=[("graph", "Mail.ReadWrite"), ("graph", "Mail.Send")], secrets=2),
        "agiloft": fake.app("Agiloft", roles=[("exchange", "full_access_as_app")], secrets=0, certs=1),
        "hoth": fake.app("House-on-the-Hill", scopes=[("graph", "POP.AccessAsUser.All"), ("graph", "SMTP.Send")],
                         user={"id": gid(), "userPrincipalName": "hoth-mail@contoso.com", "displayName": "HotH",
                               "mail": "hoth-mail@contoso.com"}),
        "admin": fake.app("Admin consented", scopes=[("exchange", "IMAP.AccessAsUser.All")]),
        "gh": fake.app("GitHub mailer", roles=[("graph", "Mail.Send")], secrets=0, fics=1),
        "mi": fake.app("Function app", roles=[("graph", "Mail.Send")], mi=True),
        "vendor": fake.app("Vendor SaaS", roles=[("exchange", "POP.AccessAsApp")], home=gid()),
        "other": fake.app("Not mail", roles=[("graph", "User.Read.All"), ("exchange", "Exchange.ManageAsApp")]),
    }
    cfg = config(tmp_path, {"helpdesk": {"tenant": "contoso", "client_id": ids["imap"], "secret": "env:X"}},
                 [{"name": "helpdesk-in", "app": "helpdesk", "flow": "app", "mailbox": "in@contoso.com"}])
    return SimpleNamespace(fake=fake, ids=ids, cfg=cfg, tmp=tmp_path)


def by_app(result) -> dict[str, m.AppFinding]:
    return {f.app_id: f for f in result.apps}


def test_finds_every_mail_capable_app_with_its_grants_and_credentials(world):
    result, _ = run(world.cfg, world.fake)
    ids = world.ids
    assert result.status == "ok" and not result.notes and exit_code([result]) == 0
    found = by_app(result)
    assert set(found) == {v for k, v in ids.items() if k != "other"}  # User.Read.All, ManageAsApp: not mail
    imap = found[ids["imap"]]
    assert imap.monitored and imap.config_app == "helpdesk" and imap.integrations == ["helpdesk-in"]
    assert imap.checks("app") == (["imap", "smtp"], [])
    assert [c.kind for c in imap.credentials] == ["client_secret"] and imap.credentials[0].hint == "h0~"
    assert imap.owners[0].user_principal_name == "owner@contoso.com"
    assert imap.last_sign_in["last"] == "2026-12-01T10:00:00Z"
    assert found[ids["sinch"]].checks("app") == (["graph_mail"], ["graph:Mail.Send"])
    agiloft = found[ids["agiloft"]]
    assert agiloft.checks("app") == (["ews"], []) and agiloft.credentials[0].kind == "certificate"
    assert agiloft.credentials[0].expired is True
    hoth = found[ids["hoth"]]
    assert hoth.flows() == ["delegated"] and hoth.checks("delegated") == (["pop", "smtp"], [])
    assert [u.user_principal_name for u in hoth.users] == ["hoth-mail@contoso.com"]
    assert {p.consent for p in found[ids["admin"]].permissions} == {"admin"}
    gh = found[ids["gh"]]
    assert gh.evidence_only and "federated" in gh.evidence_only_reason
    mi = found[ids["mi"]]
    assert mi.evidence_only and mi.service_principal_type == "ManagedIdentity" and mi.owners is None
    vendor = found[ids["vendor"]]
    assert vendor.multitenant and not vendor.credentials_known and "home tenant" in vendor.credentials_note
    assert not any(f.monitored for k, f in found.items() if k != ids["imap"])
    # per-app reads only for the mail-capable app registrations: owners + federated credentials of six apps
    assert world.fake.seen.get("owners") == 6 and world.fake.seen.get("federatedIdentityCredentials") == 6


def test_json_never_holds_more_than_the_hint(world):
    result, _ = run(world.cfg, world.fake)
    text = json.dumps([f.as_json() for f in result.apps])
    assert "secretText" not in text and '"hint": "h0~"' in text


@pytest.mark.parametrize("missing,code,permission", [
    ("Directory.Read.All", "grants_unreadable", "Directory.Read.All"),
    ("User.Read.All", "users_unreadable", "User.Read.All"),
])
def test_missing_optional_permission_is_one_note(world, missing, code, permission):
    world.fake.roles.discard(missing)
    if missing == "Directory.Read.All":
        world.fake.roles.discard("AuditLog.Read.All")  # the report accepts either
    result, _ = run(world.cfg, world.fake)
    assert result.status == "ok" and exit_code([result]) == 0
    notes = [n for n in result.notes if n.code == code]
    assert len(notes) == 1 and notes[0].permission == permission and permission in notes[0].text
    found = by_app(result)
    if missing == "Directory.Read.All":
        assert world.ids["hoth"] not in found and world.ids["imap"] in found  # app-only still listed
        assert any(n.code == "signins_unreadable" and "AuditLog.Read.All" in n.text for n in result.notes)
    else:
        hoth = found[world.ids["hoth"]]
        assert hoth.users[0].id and hoth.users[0].user_principal_name is None


def test_without_application_read_all_a_clear_error(world):
    world.fake.roles = {"Directory.Read.All"}
    result, _ = run(world.cfg, world.fake)
    assert result.status == "error" and exit_code([result]) == 3
    assert "Application.Read.All" in result.error and "Grant admin consent" in result.error and not result.apps


def test_token_refused_is_an_error(world):
    result, _ = run(world.cfg, world.fake, FakeTokens(world.cfg, {"error": "invalid_client", "error_codes": [7000222],
                                                                   "error_description": "AADSTS7000222: expired"}))
    assert result.status == "error" and "7000222" in result.error and world.fake.requests == 0


def test_a_page_that_fails_halfway_keeps_what_was_read(world):
    for i in range(250):
        world.fake.app(f"bulk {i:03}", roles=[("exchange", "SMTP.SendAsApp")])
    world.fake.max_top = 100
    world.fake.faults[("servicePrincipals", 2)] = [httpx.Response(
        400, json={"error": {"code": "Directory_ExpiredPageToken", "message": "The specified page token value has "
                             "expired and can no longer be included in your request."}})]
    result, _ = run(world.cfg, world.fake, max_pages=200)
    assert result.status == "partial" and exit_code([result]) == 1
    assert any("page 2" in p and "Directory_ExpiredPageToken" in p for p in result.partial)
    assert len(result.apps) >= 250  # every grant is known; names of apps past page 1 fall back to their ids
    text = render(world.cfg, [result])  # the unnamed ones are listed in comments, the rest still a valid config
    (world.tmp / "partial.yaml").write_text(text)
    assert config_mod.load(world.tmp / "partial.yaml").integrations and "# Not named" in text


def test_throttling_is_waited_for_within_a_bound(world):
    throttled = httpx.Response(429, headers={"Retry-After": "7"}, json={"error": {"code": "TooManyRequests"}})
    world.fake.faults[("applications", 1)] = [throttled, throttled]
    result, waits = run(world.cfg, world.fake)
    assert result.status == "ok" and waits == [7.0] and result.waited_s == 7.0


def test_throttling_past_the_bound_is_partial(world):
    long = httpx.Response(503, headers={"Retry-After": "600"}, json={"error": {"code": "ServiceUnavailable"}})
    world.fake.faults[("appRoleAssignedTo", 2)] = [long]
    result, waits = run(world.cfg, world.fake)
    assert waits == [] and result.status == "partial" and exit_code([result]) == 1
    assert any("600 s" in p for p in result.partial)


def test_page_cap(world):
    for i in range(30):
        world.fake.app(f"bulk {i:03}", roles=[("exchange", "SMTP.SendAsApp")])
    world.fake.max_top = 10
    result, _ = run(world.cfg, world.fake, max_pages=2)
    assert result.status == "partial" and any("more remain" in p for p in result.partial)


def test_an_app_with_500_credentials(world):
    app_id = world.fake.app("Many secrets", roles=[("exchange", "IMAP.AccessAsApp")], secrets=500)
    result, _ = run(world.cfg, world.fake)
    f = by_app(result)[app_id]
    assert len([c for c in f.credentials if c.kind == "client_secret"]) == 500
    text = render(world.cfg, [result])
    assert "and 495 more" in text


# -- YAML ----------------------------------------------------------------------------------------------------------
def test_yaml_is_a_valid_config_with_todo_only_where_unknown(world, tmp_path):
    world.fake.app("Evil\n  injected: true # \"name\"", roles=[("exchange", "IMAP.AccessAsApp")])
    result, _ = run(world.cfg, world.fake)
    text = render(world.cfg, [result])
    out = tmp_path / "discovered.yaml"
    out.write_text(text)
    cfg = config_mod.load(out)  # raises on any problem
    doc = yaml.safe_load(text)
    assert "injected" not in doc
    names = {i.name: i for i in cfg.integrations}
    by_client = {a.client_id: n for n, a in cfg.apps.items()}
    ids = world.ids
    assert ids["imap"] not in by_client  # monitored already: not proposed again
    assert by_client[MONITOR] == "mailwarden" and cfg.apps["mailwarden"].secret.startswith("file:/")
    assert cfg.endpoints.ca_bundle.startswith("/")
    assert ids["mi"] not in by_client and ids["mi"] in text  # a managed identity: in a comment, not an entry
    gh = cfg.apps[by_client[ids["gh"]]]  # federated credentials only: watched without a copy
    assert gh.observe_only and gh.secret is None and gh.certificate is None
    [gh_integ] = [i for i in cfg.integrations if i.app == by_client[ids["gh"]]]
    assert list(gh_integ.checks) == ["consumer"]
    sinch = next(i for i in cfg.integrations if i.app == by_client[ids["sinch"]])
    assert sinch.flow == "app" and list(sinch.checks) == ["token", "secret_expiry", "graph_mail", "consumer"]
    assert sinch.checks["token"] == {"require": ["graph:Mail.Send"]} and sinch.mailbox.startswith("todo-mailbox@")
    assert cfg.apps[by_client[ids["sinch"]]].secret.startswith("env:TODO_")
    agiloft = cfg.apps[by_client[ids["agiloft"]]]
    assert agiloft.certificate is not None and "TODO" in agiloft.certificate.key
    hoth = next(i for i in cfg.integrations if i.app == by_client[ids["hoth"]])
    assert hoth.flow == "delegated" and hoth.account == "hoth-mail@contoso.com" and "pop" in hoth.checks
    admin = next(i for i in cfg.integrations if i.app == by_client[ids["admin"]])
    assert admin.account.startswith("todo-account@")
    assert len(names) == len(cfg.integrations)
    for line in text.splitlines():  # TODO only on the lines that hold an unknown value, or in comments
        if "TODO" in line and not line.lstrip().startswith("#"):
            assert line.split(":", 1)[0].strip() in ("secret", "certificate", "mailbox", "account"), line


# -- end to end: the sandbox -----------------------------------------------------------------------------------
MAIL = ("IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp", "full_access_as_app", "IMAP.AccessAsUser.All",
        "POP.AccessAsUser.All", "SMTP.Send", "EWS.AccessAsUser.All", "EAS.AccessAsUser.All")
READER = ["Application.Read.All", "Directory.Read.All", "User.Read.All", "AuditLog.Read.All"]


def mail(name: str) -> bool:
    """The test's own idea of a mail permission (independent of the product's table)."""
    return name in MAIL or name.split(".")[0] == "Mail"


@pytest.fixture(scope="module")
def sb(shared_sandbox):
    """The session's shared sandbox (tests/sandbox_fixtures.py): this module's tenants are its own (fresh ids; the
    discovery scenario's, added once), its page faults name their tenant."""
    return shared_sandbox


@pytest.fixture(scope="module")
def tenant(sb, tmp_path_factory):
    """One tenant: 200 generated principals of every kind (sandbox extra_apps), a monitored helpdesk, an app with 500
    secrets, and monitor apps with all, some and none of the permissions discover reads with."""
    tid = str(uuid.uuid4())
    domain = f"t{tid[:8]}.onmicrosoft.com"
    ids = {k: str(uuid.uuid4()) for k in ("full", "basic", "none", "helpdesk", "many")}
    values = {k: f"{k[:2]}x8Q~{uuid.uuid4().hex}" for k in ids}
    users = [{"upn": f"user{i}@{domain}", "password": "Pw-" + uuid.uuid4().hex[:10]} for i in range(5)]
    monitors = {"full": READER, "basic": ["Application.Read.All"], "none": ["User.Read.All", "AuditLog.Read.All"]}
    apps = [{"app_id": ids[k], "display_name": f"mailwarden {k}", "secrets": [{"value": values[k]}],
             "application_permissions": {"graph": roles}} for k, roles in monitors.items()]
    apps.append({"app_id": ids["helpdesk"], "display_name": "Helpdesk", "secrets": [{"value": values["helpdesk"]}],
                 "owners": [users[0]["upn"]], "application_permissions": {"exchange": ["IMAP.AccessAsApp"]}})
    apps.append({"app_id": ids["many"], "display_name": "Many secrets", "owners": [users[1]["upn"]],
                 "secrets": [{"value": values["many"]}, {"display_name": "rotated", "count": 499}],
                 "application_permissions": {"exchange": ["SMTP.SendAsApp"]}})
    sb.control.add_tenant(id=tid, domain=domain, users=users, apps=apps, extra_apps={"count": 200, "seed": 17})
    sb.control.record_signin(tid, ids["helpdesk"], event_type="servicePrincipal", resource="exchange")
    sb.control.ingest_logs(tid)
    d = tmp_path_factory.mktemp("discover")
    (d / "secrets").mkdir()
    for k in monitors:
        (d / "secrets" / k).write_text(values[k])
    return SimpleNamespace(id=tid, domain=domain, ids=ids, values=values, dir=d)


def write_config(sb, t, monitor: str = "full", name: str = "mailwarden.yaml"):
    ends = {k: v for k, v in sb.endpoints.items() if k in ("authority", "graph", "ews", "imap", "pop", "smtp",
                                                          "ca_bundle")}
    doc = {"cloud": "custom", "endpoints": ends, "defaults": {"timeout": "30s"},
           "web": {"base_url": "https://mailwarden.lab.example"},
           "database": f"sqlite:///{t.dir / (name + '.db')}",
           "tenants": {"lab": {"tenant_id": t.id, "monitor_app": "mailwarden"}},
           "apps": {"mailwarden": {"tenant": "lab", "client_id": t.ids[monitor], "secret": f"file:secrets/{monitor}"},
                    "helpdesk": {"tenant": "lab", "client_id": t.ids["helpdesk"], "secret": "env:MW_DISCOVER_HD"}},
           "integrations": [{"name": "helpdesk-in", "app": "helpdesk", "flow": "app", "mailbox": f"in@{t.domain}"}]}
    p = t.dir / name
    p.write_text(yaml.safe_dump(doc))
    return p


def cli(*args: str):
    from typer.testing import CliRunner

    from mailwarden.monitor.cli import app

    return CliRunner().invoke(app, list(args))


def expected(sb, tid: str) -> dict[str, dict]:
    """The sandbox's own state: every principal holding a mail permission, with what it holds."""
    state = sb.control.state()
    [ten] = [x for x in state["tenants"] if x["id"] == tid]
    oids = {u["upn"].lower(): u["oid"] for u in ten["users"]}
    out = {}
    for a in ten["apps"] + ten["service_principals"]:
        roles = {f"{r}:{n}" for r, ns in a["application_permissions"].items() for n in ns if mail(n)}
        scopes = {f"{r}:{n}" for r, ns in a["delegated_permissions"].items() for n in ns if mail(n)}
        users = {u for u, g in a["user_grants"].items() if any(mail(n) for ns in g.values() for n in ns)}
        scopes |= {f"{r}:{n}" for g in a["user_grants"].values() for r, ns in g.items() for n in ns if mail(n)}
        if roles or scopes:
            out[a["app_id"]] = dict(a, roles=roles, scopes=scopes, users=users, user_ids={oids[u] for u in users})
    return out


def compare(doc: dict, want: dict[str, dict], monitored: set[str]) -> dict[str, int]:
    """discover's JSON against the sandbox's own state; returns how many of each kind were met."""
    found = {a["app_id"]: a for a in doc["apps"]}
    assert set(found) == set(want)
    kinds = {"managed_identity": 0, "federated": 0, "foreign": 0, "user": 0, "cert": 0, "monitored": 0}
    for app_id, w in want.items():
        f = found[app_id]
        assert {f"{p['resource']}:{p['name']}" for p in f["application_permissions"]} == w["roles"], app_id
        assert {f"{g['resource']}:{s}" for g in f["delegated_permissions"] for s in g["scopes"]} == w["scopes"], app_id
        assert {g["user"]["id"] for g in f["delegated_permissions"] if g["user"]} == w["user_ids"], app_id
        kinds["user"] += bool(w["users"])
        assert f["monitored"] == (app_id in monitored)
        kinds["monitored"] += f["monitored"]
        if w.get("type") == "ManagedIdentity":
            kinds["managed_identity"] += 1
            assert f["evidence_only"] and f["service_principal_type"] == "ManagedIdentity"
            continue
        if "home_tenant" in w:  # another tenant's multitenant app
            kinds["foreign"] += 1
            assert f["multitenant"] and f["home_tenant_id"] == w["home_tenant"] and not f["credentials_known"]
            continue
        creds = f["credentials"]
        assert {(c["key_id"], c["hint"]) for c in creds if c["kind"] == "client_secret"} == \
            {(s["keyId"], s["hint"]) for s in w["secrets"]}
        assert {c["key_id"] for c in creds if c["kind"] == "certificate"} == {c["keyId"] for c in w["certificates"]}
        assert {c["key_id"] for c in creds if c["kind"] == "federated"} == {c["id"] for c in w["federated_credentials"]}
        kinds["cert"] += bool(w["certificates"])
        owners = {(o["user_principal_name"] or o["app_id"] or "").lower() for o in f["owners"]}
        assert owners == set(w["owners"]), app_id
        only_federated = w["federated_credentials"] and not (w["secrets"] or w["certificates"])
        assert f["evidence_only"] == bool(only_federated)
        kinds["federated"] += bool(only_federated)
    return kinds


def test_sandbox_discover_finds_what_the_sandbox_holds(sb, tenant):
    res = cli("discover", "-c", str(write_config(sb, tenant)), "-f", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["complete"] and doc["tenants"][0]["notes"] == []
    want = expected(sb, tenant.id)
    assert len(want) > 150
    kinds = compare(doc, want, {tenant.ids["helpdesk"]})
    assert all(kinds.values()), kinds  # every kind the sandbox generates was met
    found = {a["app_id"]: a for a in doc["apps"]}
    hd = found[tenant.ids["helpdesk"]]
    assert hd["config_app"] == "helpdesk" and hd["integrations"] == ["helpdesk-in"] and hd["last_sign_in"]["last"]
    named = [g["user"] for a in doc["apps"] for g in a["delegated_permissions"] if g["user"]]
    assert named and all(u["user_principal_name"] for u in named)  # User.Read.All: consenting users by name
    many = found[tenant.ids["many"]]
    assert len([c for c in many["credentials"] if c["kind"] == "client_secret"]) == 500
    assert many["check_kinds"] == {"app": {"kinds": ["smtp"], "require": []}}


def test_sandbox_no_secret_value_in_any_output(sb, tenant):
    path = write_config(sb, tenant)
    outputs = [cli("discover", "-c", str(path), "-f", fmt) for fmt in ("table", "json", "yaml")]
    with sb.state.lock:
        [ten] = [x for x in sb.state.tenants.values() if x.id == tenant.id]
        values = [s.value for a in ten.apps.values() for s in a.secrets]
    assert len(values) > 600
    for res in outputs:
        assert res.exit_code == 0
        text = res.stdout + res.stderr
        assert not [v for v in values if v in text]


def test_sandbox_yaml_validates_and_runs(sb, tenant, tmp_path):
    res = cli("discover", "-c", str(write_config(sb, tenant)), "-f", "yaml")
    assert res.exit_code == 0, res.output
    out = tmp_path / "discovered.yaml"
    out.write_text(res.stdout)
    valid = cli("validate", "-c", str(out))
    assert valid.exit_code == 0, valid.output
    cfg = config_mod.load(out)
    assert tenant.ids["helpdesk"] not in {a.client_id for a in cfg.apps.values()}  # monitored: not proposed
    assert len(cfg.integrations) > 100
    doc = yaml.safe_load(out.read_text())
    doc["database"] = f"sqlite:///{tmp_path / 'run.db'}"
    out.write_text(yaml.safe_dump(doc))
    # one proposed integration of each flow runs with `mailwarden check` (its TODO secret unset: an error, not a crash)
    for fl in ("app", "delegated"):
        name = next(i.name for i in cfg.integrations if i.flow == fl and not cfg.apps[i.app].observe_only)
        ran = cli("check", "-c", str(out), "-i", name, "-f", "json", "--no-alerts")
        rows = json.loads(ran.stdout)
        assert ran.exit_code in (1, 2, 3) and rows and {r["integration"] for r in rows} == {name}, ran.output
    # an app with federated credentials only is proposed observe_only: it runs through the monitor app alone
    observed = [i.name for i in cfg.integrations if cfg.apps[i.app].observe_only]
    assert observed
    ran = cli("check", "-c", str(out), "-i", observed[0], "-f", "json", "--no-alerts")
    rows = json.loads(ran.stdout)
    assert [r["check"] for r in rows] == ["consumer"] and rows[0]["code"] != "config_error", ran.output


def test_sandbox_missing_optional_permissions_are_notes(sb, tenant):
    res = cli("discover", "-c", str(write_config(sb, tenant, "basic", "basic.yaml")), "-f", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    notes = {n["code"]: n for n in doc["tenants"][0]["notes"]}
    assert set(notes) == {"grants_unreadable", "signins_unreadable"}
    assert notes["grants_unreadable"]["permission"] == "Directory.Read.All"
    assert "AuditLog.Read.All" in notes["signins_unreadable"]["text"]
    assert res.stderr.count("Directory.Read.All") == 1  # said once per tenant
    found = {a["app_id"] for a in doc["apps"]}
    want = expected(sb, tenant.id)
    assert found == {k for k, w in want.items() if w["roles"]}  # application permissions are still all listed


def test_sandbox_without_application_read_all_exits_3(sb, tenant):
    res = cli("discover", "-c", str(write_config(sb, tenant, "none", "none.yaml")))
    assert res.exit_code == 3
    assert "Application.Read.All" in res.stderr and "Grant admin consent" in res.stderr
    assert "Traceback" not in res.output


@pytest.fixture(scope="module")
def big(sb, tmp_path_factory):
    """A tenant with more service principals than one page of 999."""
    tid = str(uuid.uuid4())
    mon, secret = str(uuid.uuid4()), f"bg8Q~{uuid.uuid4().hex}"
    apps = [{"app_id": mon, "display_name": "mailwarden", "secrets": [{"value": secret}],
             "application_permissions": {"graph": READER}}]
    apps += [{"display_name": f"app {i:04}", "application_permissions": {"exchange": ["SMTP.SendAsApp"]} if i % 2
              else {}} for i in range(1000)]
    sb.control.add_tenant(id=tid, domain=f"b{tid[:8]}.onmicrosoft.com", apps=apps)
    d = tmp_path_factory.mktemp("big")
    (d / "secrets").mkdir()
    (d / "secrets" / "full").write_text(secret)
    return SimpleNamespace(id=tid, domain=f"b{tid[:8]}.onmicrosoft.com",
                           ids={"full": mon, "helpdesk": str(uuid.uuid4())}, dir=d)


def test_sandbox_page_fault_halfway_is_partial(sb, big):
    sb.control.add_page_fault("servicePrincipals", 2, status=400, tenant=big.id)
    res = cli("discover", "-c", str(write_config(sb, big)), "-f", "json")
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    assert doc["tenants"][0]["status"] == "partial" and not doc["complete"]
    assert "Directory_ExpiredPageToken" in res.stderr and "partial" in res.stderr and "Traceback" not in res.output
    assert len(doc["apps"]) == 500  # every grant is known; apps past the failed page are named by their ids


def test_sandbox_throttled_page_is_waited_for(sb, big):
    sb.control.add_page_fault("servicePrincipals", 2, status=503, retry_after=1, tenant=big.id)
    res = cli("discover", "-c", str(write_config(sb, big)), "-f", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["complete"] and doc["tenants"][0]["waited_s"] == 1.0 and len(doc["apps"]) == 500


# -- the sandbox's discovery scenario (sandbox/scenarios/discovery.yaml) -------------------------------------------
SCENARIO = Path(__file__).resolve().parents[2] / "sandbox" / "scenarios" / "discovery.yaml"


@pytest.fixture(scope="module")
def demo(sb, tmp_path_factory):
    """The scenario's tenants in the module's sandbox; a config whose monitor app is the scenario's (its secret read
    from the scenario) and that monitors one of its apps (Sinch)."""
    scenario = yaml.safe_load(SCENARIO.read_text())
    for spec in scenario["tenants"]:
        sb.control.add_tenant(**spec)
    home = next(t for t in scenario["tenants"] if t.get("extra_apps"))
    by_name = {a["display_name"]: a for a in home["apps"]}
    monitor = next(a for a in home["apps"] if "Application.Read.All" in
                   (a.get("application_permissions") or {}).get("graph", []))
    d = tmp_path_factory.mktemp("demo")
    (d / "secrets").mkdir()
    (d / "secrets" / "full").write_text(monitor["secrets"][0]["value"])
    sinch = by_name["Sinch Contact Center mail"]["app_id"]
    t = SimpleNamespace(id=home["id"], domain=home["domain"], ids={"full": monitor["app_id"], "helpdesk": sinch},
                        dir=d)
    return t


def test_discovery_scenario(sb, demo, tmp_path):
    path = write_config(sb, demo)
    res = cli("discover", "-c", str(path), "-f", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    # the scenario's monitor app has Directory.Read.All, which also reads users: nothing unknown
    assert doc["complete"] and doc["tenants"][0]["notes"] == []
    kinds = compare(doc, expected(sb, demo.id), {demo.ids["helpdesk"]})
    assert all(kinds.values()), kinds
    found = {a["display_name"]: a for a in doc["apps"]}
    assert found["Intranet mail digest"]["evidence_only"] and found["func-invoice-mailer"]["evidence_only"]
    fabrikam = found["Fabrikam CRM mail connector"]
    assert fabrikam["multitenant"] and fabrikam["delegated_permissions"][0]["consent"] == "admin"
    assert "Key rotation test rig" not in found  # 500 secrets, no mail permission
    assert "Sinch escalations queue" not in found  # its consent was removed
    # no secret value of the sandbox in any format
    with sb.state.lock:
        values = [sec.value for t in sb.state.tenants.values() if t.id in (demo.id,) for a in t.apps.values()
                  for sec in a.secrets]
    outputs = [res] + [cli("discover", "-c", str(path), "-f", fmt) for fmt in ("table", "yaml")]
    for out in outputs:
        assert not [v for v in values if v in out.stdout + out.stderr]
    text = outputs[-1].stdout
    (tmp_path / "d.yaml").write_text(text)
    assert cli("validate", "-c", str(tmp_path / "d.yaml")).exit_code == 0


# -- the command line without Graph ------------------------------------------------------------------------------
CLOSED = """\
cloud: custom
endpoints: {authority: "https://127.0.0.1:1", graph: "https://127.0.0.1:1/v1.0"}
defaults: {timeout: 5s}
tenants:
  t: {tenant_id: 11111111-2222-3333-4444-555555555555, monitor_app: mon}
  other: {tenant_id: 22222222-2222-3333-4444-555555555555}
apps:
  mon: {tenant: t, client_id: 12121212-3434-5656-7878-909090909090, secret: env:MW_DISCOVER_MON}
"""


@pytest.mark.parametrize("args,said", [
    (["-f", "csv"], "--format must be table, json or yaml"),
    (["--tenant", "nope"], "no tenant named 'nope'"),
    (["--tenant", "other"], "names no monitor_app"),
    ([], "refused the connection"),  # the identity provider is a closed port
    (["--bogus"], "No such option"),
])
def test_cli_exits_3_with_one_line(tmp_path, monkeypatch, args, said):
    monkeypatch.setenv("MW_DISCOVER_MON", "value-of-the-monitor-secret")
    p = tmp_path / "mailwarden.yaml"
    p.write_text(CLOSED)
    res = cli("discover", "-c", str(p), *args)
    assert res.exit_code == 3, res.output
    assert said in res.stderr and "Traceback" not in res.output
    assert "value-of-the-monitor-secret" not in res.output


def test_unlicensed_tenant_says_why_sign_ins_are_unknown(world):
    world.fake.faults[("servicePrincipalSignInActivities", 1)] = [httpx.Response(403, json={"error": {
        "code": "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
        "message": "Neither tenant is B2C or tenant doesn't have premium license"}})]
    result, _ = run(world.cfg, world.fake)
    assert result.status == "ok" and [n.code for n in result.notes] == ["signins_unlicensed"]
    assert "P1 or P2" in result.notes[0].text
    assert all(f.last_sign_in is None for f in result.apps)
    text = render(world.cfg, [result])
    assert "consumer:" not in text  # the consumer check reads the same log: not proposed where it cannot be read
