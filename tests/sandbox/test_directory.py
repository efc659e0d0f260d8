"""Directory discovery reads (sandbox.directory): listings, paging, permissions, shapes, page faults, multitenant
apps at the token endpoint, and the `extra_apps` generator."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from mailwarden_sandbox import Sandbox, scenario
from mailwarden_sandbox.directory import PERMISSIONS
from tests.sandbox.helpers import OUTLOOK, REDIRECT, cca, session_for, sign_in_code

HOME = "a0000000-0000-4000-8000-00000000000a"  # the ISV's tenant: registers the multitenant app
CUSTOMER = "b0000000-0000-4000-8000-00000000000b"  # consented to it
OTHER = "c0000000-0000-4000-8000-00000000000c"  # never consented
MT_APP = "1e000000-0000-4000-8000-000000000001"
MT_SECRET = "mtA8Q~multitenant-secret-value-0000001"
ST_APP = "1e000000-0000-4000-8000-000000000002"  # single-tenant app of HOME
ST_SECRET = "stA8Q~singletenant-secret-value-000001"
MT_SP = "5e000000-0000-4000-8000-000000000001"  # its service principal's object id in CUSTOMER
READER = "2e000000-0000-4000-8000-000000000001"  # mailwarden in CUSTOMER: Application.Read.All + Directory.Read.All
READER_SECRET = "rdA8Q~reader-secret-value-00000000001"
APPS_ONLY = "2e000000-0000-4000-8000-000000000002"  # Application.Read.All only
APPS_ONLY_SECRET = "aoA8Q~apps-only-secret-value-0000001"
NOTHING = "2e000000-0000-4000-8000-000000000003"  # no Graph permission
NOTHING_SECRET = "noA8Q~nothing-secret-value-000000001"
DELEGATING = "2e000000-0000-4000-8000-000000000004"
BULK = "2e000000-0000-4000-8000-000000000005"
MI = "3e000000-0000-4000-8000-000000000001"
USER1, USER2 = "anna@customer.example", "ben@customer.example"
GRAPH_DEFAULT = ["https://graph.microsoft.com/.default"]
EXO_DEFAULT = ["https://outlook.office365.com/.default"]

SCENARIO = {"tenants": [
    {"id": HOME, "domain": "isv.onmicrosoft.com", "apps": [
        {"app_id": MT_APP, "display_name": "ISV Mail Connector", "sign_in_audience": "AzureADMultipleOrgs",
         "secrets": [{"display_name": "prod", "value": MT_SECRET}], "redirect_uris": [REDIRECT],
         "application_permissions": {"exchange": ["IMAP.AccessAsApp"]}},  # the ISV's own consent
        {"app_id": ST_APP, "display_name": "ISV internal", "secrets": [{"value": ST_SECRET}]},
    ]},
    {"id": CUSTOMER, "domain": "customer.onmicrosoft.com",
     "users": [{"upn": USER1, "password": "P@ss-1"}, {"upn": USER2, "password": "P@ss-2"}],
     "apps": [
         {"app_id": READER, "display_name": "mailwarden", "secrets": [{"value": READER_SECRET}],
          "application_permissions": {"graph": ["Application.Read.All", "Directory.Read.All"]}},
         {"app_id": APPS_ONLY, "display_name": "apps reader", "secrets": [{"value": APPS_ONLY_SECRET}],
          "application_permissions": {"graph": ["Application.Read.All"]}},
         {"app_id": NOTHING, "display_name": "no graph", "secrets": [{"value": NOTHING_SECRET}]},
         {"app_id": DELEGATING, "display_name": "helpdesk", "owners": [USER1, READER],
          "delegated_permissions": {"exchange": ["IMAP.AccessAsUser.All", "SMTP.Send"], "graph": ["User.Read"]},
          "user_grants": {USER2: {"graph": ["Mail.Read"]}},
          "federated_credentials": [{"name": "gh", "issuer": "https://token.actions.githubusercontent.com",
                                     "subject": "repo:org/app:ref:refs/heads/main", "description": "CI"}]},
         {"app_id": BULK, "display_name": "bulk credentials", "secrets": [{"count": 500, "display_name": "k",
                                                                           "end": "+30d"}]},
     ],
     "managed_identities": [{"app_id": MI, "display_name": "func-mailer", "user_assigned": True,
                             "application_permissions": {"graph": ["Mail.Send"]}}],
     "service_principals": [{"app_id": MT_APP, "home_tenant": "isv.onmicrosoft.com", "object_id": MT_SP,
                             "application_permissions": {"exchange": ["POP.AccessAsApp", "SMTP.SendAsApp"]},
                             "delegated_permissions": {"exchange": ["IMAP.AccessAsUser.All"]}}],
     "extra_apps": {"count": 200, "seed": 1}},
    {"id": OTHER, "domain": "other.onmicrosoft.com"},
]}


@pytest.fixture(scope="module")
def dsb(tmp_path_factory):
    with Sandbox(SCENARIO, workdir=tmp_path_factory.mktemp("directory")) as box:
        yield box


@pytest.fixture(scope="module")
def web(dsb):
    s = session_for(dsb)
    yield s
    s.close()


def token(sb, app_id: str, secret: str, tenant: str = CUSTOMER, scopes=GRAPH_DEFAULT) -> str:
    got = cca(sb, app_id, secret, tenant).acquire_token_for_client(scopes)
    assert "access_token" in got, got
    return got["access_token"]


@pytest.fixture(scope="module")
def auth(dsb) -> dict:
    return {"Authorization": f"Bearer {token(dsb, READER, READER_SECRET)}"}


def get(web, sb, path: str, headers: dict, **params):
    url = path if path.startswith("https://") else f"{sb.endpoints['graph']}/{path}"
    return web.get(url, params=params or None, headers=headers)


def walk(web, sb, path: str, headers: dict, **params) -> list[list[dict]]:
    """Every page of a listing, following @odata.nextLink to the end."""
    pages, r = [], get(web, sb, path, headers, **params)
    while True:
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body["value"])
        if "@odata.nextLink" not in body:
            return pages
        r = get(web, sb, body["@odata.nextLink"], headers)


def customer(sb):
    return sb.state.tenants[CUSTOMER]


# -- paging ----------------------------------------------------------------------------------------------------------
def test_service_principals_paged_to_the_end_once_each(dsb, web, auth):
    t = customer(dsb)
    expected = 2 + len(t.apps) + len(t.service_principals)  # Microsoft Graph, Exchange Online, apps, SPs
    pages = walk(web, dsb, "servicePrincipals", auth, **{"$top": "7"})
    ids = [sp["id"] for page in pages for sp in page]
    assert len(ids) == len(set(ids)) == expected
    assert all(len(p) == 7 for p in pages[:-1]) and 1 <= len(pages[-1]) <= 7


def test_default_page_is_100_and_next_link_is_absolute_with_skiptoken(dsb, web, auth):
    r = get(web, dsb, "applications", auth)
    body = r.json()
    assert r.status_code == 200 and r.headers["OData-Version"] == "4.0"
    assert body["@odata.context"] == f"{dsb.endpoints['graph']}/$metadata#applications"
    assert len(body["value"]) == 100
    link = urlsplit(body["@odata.nextLink"])
    assert f"{link.scheme}://{link.netloc}{link.path}" == f"{dsb.endpoints['graph']}/applications"
    assert "$skiptoken" in parse_qs(link.query)
    ids = [a["id"] for page in walk(web, dsb, "applications", auth) for a in page]
    assert len(ids) == len(set(ids)) == len(customer(dsb).apps)


def test_top_bounds(dsb, web, auth):
    assert len(get(web, dsb, "applications", auth, **{"$top": "999"}).json()["value"]) == len(customer(dsb).apps)
    assert len(get(web, dsb, "applications", auth, **{"$top": "1"}).json()["value"]) == 1
    for bad in ("1000", "0", "x"):
        r = get(web, dsb, "applications", auth, **{"$top": bad})
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["code"] == "Request_UnsupportedQuery"
        assert err["message"] == f"Invalid page size specified: '{bad}'. Must be between 1 and 999 inclusive."


def test_next_link_keeps_select_and_filter(dsb, web, auth):
    pages = walk(web, dsb, "servicePrincipals", auth,
                 **{"$top": "5", "$select": "id,appId,servicePrincipalType",
                    "$filter": "servicePrincipalType eq 'ManagedIdentity'"})
    rows = [r for p in pages for r in p]
    assert len(pages) > 1
    assert {tuple(sorted(r)) for r in rows} == {("appId", "id", "servicePrincipalType")}
    assert {r["servicePrincipalType"] for r in rows} == {"ManagedIdentity"}
    assert len(rows) == 1 + 20  # the scenario's and the generator's


def test_bad_skiptoken_is_an_expired_page_token(dsb, web, auth):
    r = get(web, dsb, "servicePrincipals", auth, **{"$skiptoken": "bm90LWEtdG9rZW4"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "Directory_ExpiredPageToken"
    # a token of another listing is not accepted either
    link = get(web, dsb, "applications", auth, **{"$top": "3"}).json()["@odata.nextLink"]
    skip = parse_qs(urlsplit(link).query)["$skiptoken"][0]
    r = get(web, dsb, "servicePrincipals", auth, **{"$skiptoken": skip})
    assert r.json()["error"]["code"] == "Directory_ExpiredPageToken"


# -- permissions -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["applications", "servicePrincipals", f"servicePrincipals(appId='{MT_APP}')",
                                  f"servicePrincipals/{MT_SP}/appRoleAssignments",
                                  f"applications(appId='{DELEGATING}')/owners",
                                  f"applications(appId='{DELEGATING}')/federatedIdentityCredentials",
                                  "oauth2PermissionGrants", "users"])
def test_403_without_directory_permissions(dsb, web, path):
    r = get(web, dsb, path, {"Authorization": f"Bearer {token(dsb, NOTHING, NOTHING_SECRET)}"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "Authorization_RequestDenied"
    assert r.json()["error"]["message"] == "Insufficient privileges to complete the operation."


def test_application_read_all_does_not_read_grants_or_users(dsb, web):
    h = {"Authorization": f"Bearer {token(dsb, APPS_ONLY, APPS_ONLY_SECRET)}"}
    assert get(web, dsb, "servicePrincipals", h).status_code == 200
    assert get(web, dsb, "oauth2PermissionGrants", h).status_code == 403
    assert get(web, dsb, "users", h).status_code == 403


def test_401_without_token(dsb, web):
    r = get(web, dsb, "servicePrincipals", {})
    assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken"


# -- shapes ----------------------------------------------------------------------------------------------------------
def test_application_shape_and_required_resource_access(dsb, web, auth):
    rows = get(web, dsb, "applications", auth, **{"$filter": f"appId eq '{DELEGATING}'"}).json()["value"]
    assert len(rows) == 1
    app = rows[0]
    assert {"id", "appId", "displayName", "signInAudience", "keyCredentials", "passwordCredentials",
            "requiredResourceAccess", "publisherDomain", "createdDateTime"} <= set(app)
    assert app["signInAudience"] == "AzureADMyOrg"
    rra = {r["resourceAppId"]: r["resourceAccess"] for r in app["requiredResourceAccess"]}
    assert {"id": "195adc35-e27b-454b-a7ed-1ecdffa1c09f", "type": "Scope"} in rra[
        "00000002-0000-0ff1-ce00-000000000000"]  # IMAP.AccessAsUser.All
    assert {"id": "e1fe6dd8-ba31-4d61-89e7-88639da4683d", "type": "Scope"} in rra[
        "00000003-0000-0000-c000-000000000000"]  # User.Read
    home = dsb.state.tenants[HOME].apps[MT_APP]
    assert home.sign_in_audience == "AzureADMultipleOrgs"


def test_bulk_app_has_500_credentials(dsb, web, auth):
    r = get(web, dsb, f"applications(appId='{BULK}')", auth)
    assert r.status_code == 200
    assert len(r.json()["passwordCredentials"]) == 500


def test_service_principal_kinds(dsb, web, auth):
    sps = {sp["appId"]: sp for p in walk(web, dsb, "servicePrincipals", auth, **{"$top": "999"}) for sp in p}
    mt, mi, own = sps[MT_APP], sps[MI], sps[READER]
    keys = {"id", "appId", "displayName", "servicePrincipalType", "appOwnerOrganizationId", "accountEnabled",
            "appRoleAssignmentRequired", "signInAudience", "alternativeNames", "keyCredentials",
            "passwordCredentials", "appRoles", "oauth2PermissionScopes", "servicePrincipalNames", "tags"}
    assert keys <= set(mt) and keys <= set(mi)
    assert (mt["id"], mt["servicePrincipalType"], mt["appOwnerOrganizationId"]) == (MT_SP, "Application", HOME)
    assert mt["signInAudience"] == "AzureADMultipleOrgs" and mt["displayName"] == "ISV Mail Connector"
    assert own["appOwnerOrganizationId"] == CUSTOMER and own["keyCredentials"] == own["passwordCredentials"] == []
    assert mi["servicePrincipalType"] == "ManagedIdentity" and mi["appOwnerOrganizationId"] is None
    assert mi["alternativeNames"][0] == "isExplicit=True" and mi["alternativeNames"][1].startswith("/subscriptions/")
    assert mi["keyCredentials"][0]["type"] == "AsymmetricX509Cert"


def test_resource_service_principals_carry_microsofts_permission_ids(dsb, web, auth):
    exo = get(web, dsb, "servicePrincipals(appId='00000002-0000-0ff1-ce00-000000000000')", auth).json()
    assert exo["displayName"] == "Office 365 Exchange Online"
    assert exo["appOwnerOrganizationId"] == "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
    roles = {r["value"]: r for r in exo["appRoles"]}
    assert roles["IMAP.AccessAsApp"]["id"] == "5e5addcd-3e8d-4e90-baf5-964efab2b20a"
    assert roles["POP.AccessAsApp"]["id"] == "cb842b43-da6e-4506-86fe-bb12199c656d"
    assert roles["full_access_as_app"]["id"] == "dc890d15-9560-4a4c-9b7f-a736ec74ec40"
    assert roles["IMAP.AccessAsApp"]["allowedMemberTypes"] == ["Application"] and roles["IMAP.AccessAsApp"][
        "isEnabled"]
    scopes = {s["value"]: s for s in exo["oauth2PermissionScopes"]}
    assert {"id", "value", "type"} <= set(scopes["SMTP.Send"])
    graph = get(web, dsb, "servicePrincipals(appId='00000003-0000-0000-c000-000000000000')", auth).json()
    roles = {r["value"]: r["id"] for r in graph["appRoles"]}
    assert roles["Mail.Read"] == "810c84a8-4a9e-49e6-bf7d-12d183f40d01"
    assert roles["Mail.Send"] == "b633e1c5-b582-4048-a93e-9f11b44c7e96"
    assert len({pid for pid, _ in PERMISSIONS.values()}) >= len(PERMISSIONS) - 3  # Exchange reuses Graph's Mail ids


def test_app_role_assigned_to_and_assignments(dsb, web, auth):
    exo = get(web, dsb, "servicePrincipals(appId='00000002-0000-0ff1-ce00-000000000000')", auth).json()
    rows = [r for p in walk(web, dsb, f"servicePrincipals/{exo['id']}/appRoleAssignedTo", auth, **{"$top": "10"})
            for r in p]
    assert len({r["id"] for r in rows}) == len(rows)
    mine = [r for r in rows if r["principalId"] == MT_SP]
    assert {r["appRoleId"] for r in mine} == {"cb842b43-da6e-4506-86fe-bb12199c656d",
                                              "7146a1f0-8703-45b3-9eae-527a64c00995"}  # POP, SMTP.SendAsApp
    assert {"id", "appRoleId", "principalId", "principalType", "principalDisplayName", "resourceId",
            "resourceDisplayName", "createdDateTime"} <= set(mine[0])
    assert mine[0]["principalType"] == "ServicePrincipal" and mine[0]["resourceId"] == exo["id"]
    # an app SP's own assignments: the same rows seen from the client side
    own = get(web, dsb, f"servicePrincipals/{MT_SP}/appRoleAssignments", auth).json()
    assert own["@odata.context"].endswith(f"$metadata#servicePrincipals('{MT_SP}')/appRoleAssignments")
    assert sorted(r["id"] for r in own["value"]) == sorted(r["id"] for r in mine)
    r = get(web, dsb, f"servicePrincipals/{uuid.uuid4()}/appRoleAssignments", auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "Request_ResourceNotFound"


def test_oauth2_permission_grants(dsb, web, auth):
    t = customer(dsb)
    sp = t.apps[DELEGATING].sp_object_id
    rows = get(web, dsb, "oauth2PermissionGrants", auth, **{"$filter": f"clientId eq '{sp}'"}).json()["value"]
    exo = get(web, dsb, "servicePrincipals(appId='00000002-0000-0ff1-ce00-000000000000')", auth).json()["id"]
    graph = get(web, dsb, "servicePrincipals(appId='00000003-0000-0000-c000-000000000000')", auth).json()["id"]
    by = {(r["consentType"], r["resourceId"]): r for r in rows}
    assert set(by) == {("AllPrincipals", exo), ("AllPrincipals", graph), ("Principal", graph)}
    assert by[("AllPrincipals", exo)]["scope"] == "IMAP.AccessAsUser.All SMTP.Send"
    assert by[("AllPrincipals", exo)]["principalId"] is None
    assert by[("Principal", graph)]["principalId"] == t.users[USER2].oid
    assert by[("Principal", graph)]["scope"] == "Mail.Read"
    assert set(rows[0]) == {"id", "clientId", "consentType", "principalId", "resourceId", "scope"}
    both = get(web, dsb, "oauth2PermissionGrants", auth,
               **{"$filter": f"clientId eq '{sp}' and resourceId eq '{exo}'"}).json()["value"]
    assert len(both) == 1
    every = [r for p in walk(web, dsb, "oauth2PermissionGrants", auth) for r in p]
    assert any(r["clientId"] == MT_SP for r in every)
    r = get(web, dsb, "oauth2PermissionGrants", auth, **{"$filter": "scope eq 'Mail.Read'"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "Request_UnsupportedQuery"


def test_owners_and_federated_credentials(dsb, web, auth):
    t = customer(dsb)
    app = t.apps[DELEGATING]
    owners = get(web, dsb, f"applications/{app.object_id}/owners", auth).json()
    types = {o["@odata.type"]: o for o in owners["value"]}
    assert types["#microsoft.graph.user"]["id"] == t.users[USER1].oid
    assert types["#microsoft.graph.servicePrincipal"]["appId"] == READER
    fic = get(web, dsb, f"applications(appId='{DELEGATING}')/federatedIdentityCredentials", auth).json()
    assert fic["@odata.context"].endswith(f"$metadata#applications('{app.object_id}')/federatedIdentityCredentials")
    (row,) = fic["value"]
    assert set(row) == {"id", "name", "issuer", "subject", "audiences", "description"}
    assert row["audiences"] == ["api://AzureADTokenExchange"]


def test_select_on_lists(dsb, web, auth):
    body = get(web, dsb, "applications", auth, **{"$select": "id,appId", "$top": "3"}).json()
    assert body["@odata.context"].endswith("$metadata#applications(id,appId)")
    assert all(set(a) == {"id", "appId"} for a in body["value"])
    r = get(web, dsb, "applications", auth, **{"$select": "id,nope"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "Request_BadRequest"


def test_users_listing(dsb, web, auth):
    rows = [u for p in walk(web, dsb, "users", auth) for u in p]
    assert {u["userPrincipalName"] for u in rows} == {USER1, USER2}


# -- page faults -----------------------------------------------------------------------------------------------------
def test_page_fault_on_the_second_page_then_recovers(dsb, web, auth):
    dsb.control.add_page_fault("servicePrincipals", page=2, status=503, retry_after=7, tenant=CUSTOMER)
    first = get(web, dsb, "servicePrincipals", auth, **{"$top": "50"})
    assert first.status_code == 200
    link = first.json()["@odata.nextLink"]
    r = get(web, dsb, link, auth)
    assert r.status_code == 503 and r.headers["Retry-After"] == "7"
    assert r.json()["error"]["code"] == "ServiceUnavailable"
    again = get(web, dsb, link, auth)
    assert again.status_code == 200


def test_page_fault_expired_token_until_cleared(dsb, web, auth):
    fid = dsb.control.add_page_fault("applications", page=3, status=400, count=None)
    try:
        link = get(web, dsb, "applications", auth, **{"$top": "40"}).json()["@odata.nextLink"]
        link = get(web, dsb, link, auth).json()["@odata.nextLink"]
        for _ in range(2):
            r = get(web, dsb, link, auth)
            assert r.status_code == 400
            assert r.json()["error"] == {**r.json()["error"], "code": "Directory_ExpiredPageToken",
                                         "message": "The specified page token value has expired and can no "
                                                    "longer be included in your request."}
        assert any(f["id"] == fid for f in dsb.control.state()["faults"])
    finally:
        dsb.control.clear_faults(fid)
    assert get(web, dsb, link, auth).status_code == 200


def test_page_fault_refuses_unknown_listings(dsb):
    from mailwarden_sandbox.control import ControlError

    with pytest.raises(ControlError):
        dsb.control.add_page_fault("groups", page=1)


# -- multitenant apps at the token endpoint --------------------------------------------------------------------------
def test_multitenant_app_signs_in_where_it_has_a_service_principal(dsb):
    claims = jwt.decode(token(dsb, MT_APP, MT_SECRET, CUSTOMER, EXO_DEFAULT), options={"verify_signature": False})
    assert claims["tid"] == CUSTOMER and claims["oid"] == MT_SP and claims["appid"] == MT_APP
    assert sorted(claims["roles"]) == ["POP.AccessAsApp", "SMTP.SendAsApp"]  # the customer's consent, not the ISV's
    home = jwt.decode(token(dsb, MT_APP, MT_SECRET, HOME, EXO_DEFAULT), options={"verify_signature": False})
    assert home["tid"] == HOME and home["roles"] == ["IMAP.AccessAsApp"]


def test_700016_in_a_tenant_without_its_service_principal(dsb):
    for app_id, secret, tenant in ((MT_APP, MT_SECRET, OTHER), (ST_APP, ST_SECRET, CUSTOMER)):
        got = cca(dsb, app_id, secret, tenant).acquire_token_for_client(GRAPH_DEFAULT)
        assert got.get("error_codes") == [700016], got
        assert f"Application with identifier '{app_id}' was not found in the directory" in got["error_description"]


def test_multitenant_app_wrong_secret_and_disabled_service_principal(dsb):
    got = cca(dsb, MT_APP, "wrong-value", CUSTOMER).acquire_token_for_client(GRAPH_DEFAULT)
    assert got.get("error_codes") == [7000215]
    with dsb.state.lock:
        dsb.state.tenants[CUSTOMER].service_principals[MT_APP].enabled = False
    try:
        got = cca(dsb, MT_APP, MT_SECRET, CUSTOMER).acquire_token_for_client(GRAPH_DEFAULT)
        assert got.get("error_codes") == [7000112]
        assert "access_token" in cca(dsb, MT_APP, MT_SECRET, HOME).acquire_token_for_client(GRAPH_DEFAULT)
    finally:
        with dsb.state.lock:
            dsb.state.tenants[CUSTOMER].service_principals[MT_APP].enabled = True


# -- scenario ----------------------------------------------------------------------------------------------------
def _generated(tmp: Path, seed: int = 1, count: int = 200):
    spec = {"tenants": [{"id": CUSTOMER, "domain": "gen.onmicrosoft.com",
                         "users": [{"upn": "u1@gen.example", "password": "x"},
                                   {"upn": "u2@gen.example", "password": "x"}],
                         "extra_apps": {"count": count, "seed": seed}}]}
    state = scenario.build_state(spec, tmp)
    t = state.tenants[CUSTOMER]
    return t, {a.app_id: (a.display_name, a.object_id, a.sp_object_id, state.started_at - a.created,
                          {r: sorted(p) for r, p in a.app_permissions.items()},
                          {r: sorted(p) for r, p in a.delegated_permissions.items()},
                          [(s.key_id, s.value, s.end - state.started_at) for s in a.secrets])
               for a in t.apps.values()} | {sp.app_id: (sp.object_id, sp.kind, sp.home_tenant_id)
                                            for sp in t.service_principals.values()}


def test_generator_is_deterministic_and_mixed(tmp_path):
    t1, apps1 = _generated(tmp_path / "a")
    _, apps2 = _generated(tmp_path / "b")
    assert apps1 == apps2
    _, other = _generated(tmp_path / "c", seed=2)
    assert not set(other) & set(apps1)
    kinds = {k: 20 for k in scenario.EXTRA_KINDS}
    assert len(t1.apps) + len(t1.service_principals) == 200
    assert len([s for s in t1.service_principals.values() if s.kind == "ManagedIdentity"]) == kinds["managed_identity"]
    assert len([s for s in t1.service_principals.values() if s.kind == "Application"]) == kinds["foreign_sp"]
    now = dt.datetime.now(dt.UTC)
    assert len([a for a in t1.apps.values() if a.federated_credentials]) == 20
    assert len([a for a in t1.apps.values() if a.certificates and not a.secrets]) == 20
    assert len([a for a in t1.apps.values() if a.secrets and all(s.end < now for s in a.secrets)]) == 20
    assert len([a for a in t1.apps.values() if any(a.user_grants.values())]) == 20
    assert any("SMTP.SendAsApp" in a.app_permissions.get("exchange", ()) for a in t1.apps.values())
    assert any(a.app_permissions.get("graph") and "Mail.Read" in a.app_permissions["graph"] for a in t1.apps.values())


def test_foreign_service_principal_needs_a_multitenant_app(tmp_path):
    spec = {"tenants": [
        {"id": HOME, "apps": [{"app_id": ST_APP}]},
        {"id": CUSTOMER, "service_principals": [{"app_id": ST_APP, "home_tenant": HOME}]}]}
    with pytest.raises(scenario.ScenarioError, match="not multitenant"):
        scenario.build_state(spec, tmp_path)
    # the home tenant may come later in the file
    spec = {"tenants": list(reversed(spec["tenants"]))}
    spec["tenants"][1]["apps"][0]["sign_in_audience"] = "AzureADMultipleOrgs"
    state = scenario.build_state(spec, tmp_path / "b")
    assert state.tenants[CUSTOMER].service_principals[ST_APP].home_tenant_id == HOME


def test_discovery_scenario_loads(tmp_path):
    path = Path(__file__).resolve().parents[2] / "sandbox" / "scenarios" / "discovery.yaml"
    state = scenario.build_state(path, tmp_path)
    demo = state.tenant("contoso-demo.onmicrosoft.com")
    assert "0b6f4f1e-9a51-4c0e-8f6e-1d2c3b4a5e61" in demo.apps  # the demo's apps are there
    assert len(demo.apps) + len(demo.service_principals) >= 200 + 9


# -- control ops ---------------------------------------------------------------------------------------------------
def test_consent_in_another_tenant_at_run_time_then_removal(dsb):
    made = dsb.control.add_foreign_service_principal(OTHER, MT_APP, "isv.onmicrosoft.com",
                                                     application_permissions={"graph": ["Mail.Read"]})
    try:
        claims = jwt.decode(token(dsb, MT_APP, MT_SECRET, OTHER), options={"verify_signature": False})
        assert claims["tid"] == OTHER and claims["oid"] == made["object_id"] and claims["roles"] == ["Mail.Read"]
    finally:
        dsb.control.delete_directory_service_principal(OTHER, MT_APP)
    got = cca(dsb, MT_APP, MT_SECRET, OTHER).acquire_token_for_client(GRAPH_DEFAULT)
    assert got.get("error_codes") == [700016]
    from mailwarden_sandbox.control import ControlError

    with pytest.raises(ControlError):  # a single-tenant app cannot be consented elsewhere
        dsb.control.add_foreign_service_principal(OTHER, ST_APP, HOME)


def test_single_tenant_again_stops_other_tenants(dsb):
    dsb.control.set_sign_in_audience(MT_APP, "AzureADMyOrg")
    try:
        got = cca(dsb, MT_APP, MT_SECRET, CUSTOMER).acquire_token_for_client(GRAPH_DEFAULT)
        assert got.get("error_codes") == [700016]
    finally:
        dsb.control.set_sign_in_audience(MT_APP, "AzureADMultipleOrgs")
    assert "access_token" in cca(dsb, MT_APP, MT_SECRET, CUSTOMER).acquire_token_for_client(GRAPH_DEFAULT)


def test_federated_credential_and_managed_identity_ops(dsb, web, auth):
    f = dsb.control.add_federated_credential(READER, name="aks", issuer="https://oidc.example/issuer",
                                             subject="system:serviceaccount:mail:reader")
    path = f"applications(appId='{READER}')/federatedIdentityCredentials"
    assert [x["id"] for x in get(web, dsb, path, auth).json()["value"]] == [f["id"]]
    dsb.control.remove_federated_credential(READER, f["id"])
    assert get(web, dsb, path, auth).json()["value"] == []
    mi = dsb.control.add_managed_identity(CUSTOMER, display_name="logic-mail",
                                          application_permissions={"exchange": ["SMTP.SendAsApp"]})
    try:
        sp = get(web, dsb, f"servicePrincipals/{mi['object_id']}", auth).json()
        assert sp["servicePrincipalType"] == "ManagedIdentity" and sp["displayName"] == "logic-mail"
        rows = get(web, dsb, f"servicePrincipals/{mi['object_id']}/appRoleAssignments", auth).json()["value"]
        assert [r["appRoleId"] for r in rows] == ["7146a1f0-8703-45b3-9eae-527a64c00995"]
    finally:
        dsb.control.delete_directory_service_principal(CUSTOMER, mi["app_id"])


def test_select_is_checked_on_empty_listings_too(dsb, web, auth):
    path = f"applications(appId='{READER}')/federatedIdentityCredentials"
    ok = get(web, dsb, path, auth, **{"$select": "id,subject"}).json()
    assert ok["value"] == [] and ok["@odata.context"].endswith("/federatedIdentityCredentials(id,subject)")
    r = get(web, dsb, path, auth, **{"$select": "id,colour"})
    assert r.status_code == 400 and "microsoft.graph.federatedIdentityCredential" in r.json()["error"]["message"]
    r = get(web, dsb, "servicePrincipals", auth, **{"$filter": f"appId eq '{uuid.uuid4()}'", "$select": "id,nope"})
    assert r.status_code == 400


def test_user_consent_in_the_customer_tenant_lands_on_its_service_principal(dsb, web, auth):
    app = cca(dsb, MT_APP, MT_SECRET, CUSTOMER)
    flow, response = sign_in_code(dsb, app, USER1, OUTLOOK, password="P@ss-1")  # SMTP.Send: not admin-consented
    got = app.acquire_token_by_auth_code_flow(flow, response)
    assert "access_token" in got, got
    claims = jwt.decode(got["access_token"], options={"verify_signature": False})
    assert claims["tid"] == CUSTOMER and claims["oid"] == customer(dsb).users[USER1].oid
    assert set(claims["scp"].split()) == {"IMAP.AccessAsUser.All", "SMTP.Send"}
    rows = get(web, dsb, "oauth2PermissionGrants", auth, **{"$filter": f"clientId eq '{MT_SP}'"}).json()["value"]
    mine = {r["consentType"]: r for r in rows}
    assert mine["AllPrincipals"]["scope"] == "IMAP.AccessAsUser.All"
    assert mine["Principal"]["principalId"] == customer(dsb).users[USER1].oid
    assert "SMTP.Send" in mine["Principal"]["scope"].split()
    assert not dsb.state.tenants[HOME].apps[MT_APP].user_grants  # nothing changed in the ISV's tenant
