"""`mailwarden discover`: every app registration and service principal of a tenant that can touch mail, read with
the tenant's monitor app (issue 17).

Requests, per tenant (Graph v1.0 unless said; Application.Read.All unless said):
1. the two resource service principals, Microsoft Graph and Office 365 Exchange Online, by appId, with their
   ``appRoles`` (an assignment names its role only by id);
2. at once: ``servicePrincipals`` and ``applications`` (``$top=999``, ``$select``), each resource's
   ``appRoleAssignedTo`` (every application permission granted on it), ``oauth2PermissionGrants`` filtered by each
   resource (delegated grants: Directory.Read.All), and beta ``reports/servicePrincipalSignInActivities`` (last
   sign-ins: AuditLog.Read.All, Entra ID P1/P2);
3. only for the apps that can touch mail: their ``owners`` and ``federatedIdentityCredentials``, and the consenting
   users' names (User.Read.All): one request each, or one listing of the users when many consented.

A missing optional permission is one note per tenant naming the permission and what it would show. Without
Application.Read.All nothing can be listed: the tenant's discovery ends with an error saying how to grant it. A
listing whose page fails halfway keeps what was read and marks the tenant partial.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, cast

from mailwarden.checks import graph_client
from mailwarden.errors import MailwardenError
from mailwarden.monitor import discover_model as m
from mailwarden.monitor.config import Config
from mailwarden.monitor.discover_graph import REPLY_CAP, GraphReader, Listing, ReadError
from mailwarden.monitor.signin_plan import beta_base
from mailwarden.redact import redact

NON_PREMIUM = "Authentication_RequestFromNonPremiumTenantOrB2CTenant"
PER_APP_CONCURRENCY = 8
USERS_LISTED_FROM = 50  # more consenting users than this: list the users once instead of one request each
SP_SELECT = "id,appId,displayName,servicePrincipalType,appOwnerOrganizationId,accountEnabled"
APP_SELECT = "id,appId,displayName,publisherDomain,signInAudience,passwordCredentials,keyCredentials"
RESOURCE_SELECT = "id,appId,displayName,appRoles"  # a grant names its scopes itself; an assignment only its role id
USER_SELECT = "id,userPrincipalName,displayName,mail"


def grant_text(app: str) -> str:
    return (f"grant the monitor app {app} the Microsoft Graph application permission Application.Read.All with admin "
            f"consent (Entra admin center > App registrations > {app} > API permissions > Add a permission > "
            "Microsoft Graph > Application permissions > Application.Read.All, then Grant admin consent)")


class Discovery:
    """One run over the selected tenants. ``tokens`` is the TokenProvider (its app_token is blocking: MSAL)."""

    def __init__(self, config: Config, tokens: Any, *, timeout_s: float | None = None, reader_options: dict | None
                 = None):
        self.config = config
        self.tokens = tokens
        self.endpoints = tokens.endpoints
        self.timeout_s = float(timeout_s if timeout_s is not None else config.defaults.timeout)
        self.reader_options = reader_options or {}

    async def run(self, tenants: Iterable[str]) -> list[m.TenantDiscovery]:
        async with graph_client.capped_client(verify=graph_client.verify_for(self.endpoints), timeout=self.timeout_s,
                                              trust_env=not self.endpoints.ca_bundle, cap=REPLY_CAP) as http:
            return list(await asyncio.gather(*(self.tenant(http, name) for name in tenants)))

    async def tenant(self, http: Any, name: str) -> m.TenantDiscovery:
        t = self.config.tenants[name]
        out = m.TenantDiscovery(name, t.tenant_id, t.monitor_app)
        started = time.perf_counter()
        try:
            if not t.monitor_app:
                out.error = (f"tenant {name} names no monitor_app: set tenants.{name}.monitor_app to an app with the "
                             "Microsoft Graph application permission Application.Read.All")
                return out
            token = await asyncio.to_thread(self._token, t.monitor_app, t.tenant_id)
            if isinstance(token, _Refused):
                out.error = str(token)
                return out
            reader = GraphReader(http, token, **self.reader_options)
            try:
                await _Tenant(self, reader, out).run()
            finally:
                out.requests, out.waited_s = reader.requests, reader.waited_s
        finally:
            out.seconds = time.perf_counter() - started
        return out

    def _token(self, monitor_app: str, tenant_id: str) -> str:
        """The monitor app's Graph token, or why there is none (a ``_Refused``)."""
        from mailwarden.checks.replies import REPLIES
        from mailwarden.checks.token import refused_outcome, token_failure

        what = f"the monitor app {monitor_app}'s Graph token"
        REPLIES.begin()
        try:
            result = self.tokens.app_token(monitor_app, self.endpoints.graph_resource)
        except MailwardenError as exc:  # its secret reference does not resolve
            return _Refused(exc.message())
        except Exception as exc:  # noqa: BLE001 - classified as the token check does
            outcome = token_failure(exc, what, self.endpoints.authority, None, self.endpoints.token_endpoint(tenant_id),
                                    self.config.apps[monitor_app].client_id)
            return _Refused(outcome.summary if outcome is not None else f"{what}: {type(exc).__name__}: {redact(exc)}")
        if "access_token" in result:
            return str(result["access_token"])
        return _Refused(refused_outcome(result, what).summary)


class _Refused(str):
    """A reason, not a token."""


class _Tenant:
    """The reads of one tenant and what is made of them."""

    def __init__(self, run: Discovery, reader: GraphReader, out: m.TenantDiscovery):
        self.config = run.config
        self.graph = run.endpoints.graph.rstrip("/")
        self.reader = reader
        self.out = out
        self.now = datetime.now(UTC)

    async def run(self) -> None:
        resources = await asyncio.gather(*(self._resource(r) for r in (m.GRAPH, m.EXCHANGE)))
        sps: dict[str, dict[str, Any] | None] = {}
        for r, got in zip((m.GRAPH, m.EXCHANGE), resources, strict=True):
            if isinstance(got, ReadError):  # the first one
                self.out.error = self._fatal(got)
                return
            sps[r] = got
        if sps[m.EXCHANGE] is None:
            self.out.note("no_exchange_online", "the tenant has no Office 365 Exchange Online service principal: no "
                          "app holds an Exchange permission (IMAP, POP, SMTP, EWS) in it")
        sp_ids = {r: sp["id"] for r, sp in sps.items() if sp is not None}
        present = list(sp_ids)
        jobs = [self.list("servicePrincipals", {"$top": "999", "$select": SP_SELECT}, "the list of service principals"),
                self.list("applications", {"$top": "999", "$select": APP_SELECT}, "the list of app registrations"),
                self._signins()]
        jobs += [self.list(f"servicePrincipals/{sp_ids[r]}/appRoleAssignedTo", {"$top": "999"},
                           f"the application permissions granted on {m.RESOURCE_NAMES[r]}") for r in present]
        jobs += [self.list("oauth2PermissionGrants", {"$filter": f"resourceId eq '{sp_ids[r]}'", "$top": "999"},
                           f"the delegated grants on {m.RESOURCE_NAMES[r]}") for r in present]
        done = await asyncio.gather(*jobs)
        # every job but the third (_signins, which may give None) is a self.list, giving a Listing
        sp_list, app_list, activity = cast(Listing, done[0]), cast(Listing, done[1]), done[2]
        lists = cast(builtins.list[Listing], done[3:])
        assigned = dict(zip(present, lists[:len(present)], strict=True))
        granted = dict(zip(present, lists[len(present):], strict=True))
        for listing in (sp_list, app_list, *assigned.values()):
            if listing.error is not None and listing.error.forbidden and not listing.items:
                self.out.error = self._fatal(listing.error)
                return
            self._partial(listing)
        grants_ok = self._optional_grants(granted)
        clients: dict[str, list[m.Permission]] = {}
        for r in present:
            for sp_id, found in m.app_permissions(assigned[r].items, r, m.role_names(sps[r])).items():
                clients.setdefault(sp_id, []).extend(found)
            if grants_ok:
                for sp_id, found in m.delegated_permissions(granted[r].items, r).items():
                    clients.setdefault(sp_id, []).extend(found)
        findings = self._findings(clients, sp_list.items, app_list.items, activity)
        await self._details(findings)
        self.out.apps = sorted(findings, key=lambda f: (f.display_name.lower(), f.app_id))

    # -- reads ---------------------------------------------------------------------------------------------
    async def list(self, path: str, params: dict[str, str] | None, what: str) -> Listing:
        return await self.reader.listing(f"{self.graph}/{path}", params, what)

    async def _resource(self, resource: str) -> dict[str, Any] | ReadError | None:
        app_id = m.RESOURCE_APP_IDS[resource]
        body = await self.reader.get(f"{self.graph}/servicePrincipals",
                                     {"$filter": f"appId eq '{app_id}'", "$select": RESOURCE_SELECT},
                                     f"the service principal of {m.RESOURCE_NAMES[resource]}")
        if isinstance(body, ReadError):
            return body
        found = [v for v in body.get("value") or [] if isinstance(v, dict) and v.get("id")]
        return found[0] if found else None

    async def _signins(self) -> Listing | None:
        listing = await self.reader.listing(f"{beta_base(self.graph)}/reports/servicePrincipalSignInActivities",
                                            None, "the last sign-ins (servicePrincipalSignInActivities)")
        err = listing.error
        if err is None:
            return listing
        if err.status == 403 and err.code == NON_PREMIUM and not listing.items:
            self.out.note("signins_unlicensed", "last sign-ins are unknown: Microsoft Graph keeps the usage reports "
                          "only in tenants with Microsoft Entra ID P1 or P2 (" + err.detail + ")")
            return None
        if err.forbidden and not listing.items:
            self.out.note("signins_unreadable", "last sign-ins are unknown: the monitor app lacks the Microsoft Graph "
                          "application permission AuditLog.Read.All, which shows when each app last signed in "
                          "(app-only and delegated), so that unused apps stand out", "AuditLog.Read.All")
            return None
        if err.status in (400, 404) and not listing.items:
            self.out.note("signins_unsupported", "last sign-ins are unknown: this Graph has no beta "
                          "reports/servicePrincipalSignInActivities (" + err.detail + ")")
            return None
        self._partial(listing)
        return listing

    def _optional_grants(self, granted: dict[str, Listing]) -> bool:
        forbidden = [g for g in granted.values() if g.error is not None and g.error.forbidden and not g.items]
        if forbidden:
            self.out.note("grants_unreadable", "delegated grants are unknown: the monitor app lacks the Microsoft "
                          "Graph application permission Directory.Read.All, which shows the apps that users or an "
                          "admin consented to read or send mail as a user (IMAP, POP, SMTP, EWS, Mail.*) and who "
                          "consented; only application permissions are listed", "Directory.Read.All")
            return False
        for g in granted.values():
            self._partial(g)
        return True

    def _partial(self, listing: Listing | None) -> None:
        if listing is None or listing.error is None:
            return
        err = listing.error
        kept = f"; the {len(listing.items)} objects read before are shown" if listing.items else ""
        self.out.partial.append(f"{err.sentence()}{kept}")

    def _fatal(self, err: ReadError) -> str:
        app = self.out.monitor_app or "the monitor app"
        if err.forbidden:
            return (f"{err.sentence()}: the monitor app {app} may not read the tenant's applications. To list them, "
                    + grant_text(app) + ".")
        return err.sentence()

    # -- findings ------------------------------------------------------------------------------------------
    def _findings(self, clients: dict[str, builtins.list[m.Permission]], sps: builtins.list[dict],
                  apps: builtins.list[dict], activity: Listing | None) -> builtins.list[m.AppFinding]:
        by_sp = {str(s.get("id")).lower(): s for s in sps if s.get("id")}
        by_app = {str(a.get("appId")).lower(): a for a in apps if a.get("appId")}
        seen = {str(r.get("appId")).lower(): r for r in (activity.items if activity else []) if r.get("appId")}
        tid = self.out.tenant_id.lower()
        configured: dict[str, str] = {}
        for name, app in self.config.apps.items():
            if app.tenant == self.out.tenant:
                configured.setdefault(app.client_id.lower(), name)
        out = []
        for sp_id, held in clients.items():
            sp = by_sp.get(sp_id)
            if sp is None:  # granted, but not in the list read (a partial list): said by its partial note
                sp = {"id": sp_id, "appId": None, "displayName": None}
            app_id = str(sp.get("appId") or "").lower()
            reg = by_app.get(app_id)
            home = sp.get("appOwnerOrganizationId")
            f = m.AppFinding(
                tenant=self.out.tenant, display_name=str(sp.get("displayName") or (reg or {}).get("displayName")
                                                         or app_id or sp_id),
                app_id=app_id, service_principal_id=sp_id, application_object_id=(reg or {}).get("id"),
                service_principal_type=str(sp.get("servicePrincipalType") or "Application"),
                enabled=sp.get("accountEnabled") is not False, home_tenant_id=str(home).lower() if home else None,
                multitenant=(bool(home) and str(home).lower() != tid)
                or str((reg or {}).get("signInAudience") or "").startswith("AzureADMultipleOrgs"),
                publisher_domain=(reg or {}).get("publisherDomain"), permissions=held)
            if reg is not None:
                f.credentials = [m.secret(c, self.now) for c in reg.get("passwordCredentials") or []]
                f.credentials += [m.certificate(c, self.now) for c in reg.get("keyCredentials") or []]
            elif f.service_principal_type == m.MANAGED_IDENTITY:
                f.credentials = [m.Credential("managed_identity", display_name="managed by Azure")]
            else:
                f.credentials_known = False
                f.credentials_note = (f"the app registration is in its home tenant {f.home_tenant_id}: its credentials "
                                      "are read there" if f.home_tenant_id and f.home_tenant_id != tid else
                                      "no app registration was found for it in the list read")
            f.last_sign_in = m.last_sign_in(seen.get(app_id)) if activity is not None else None
            config_app = configured.get(app_id)
            if config_app is not None:
                f.monitored, f.config_app = True, config_app
                f.integrations = [i.name for i in self.config.integrations if i.app == config_app]
            out.append(f)
        return out

    async def _details(self, findings: builtins.list[m.AppFinding]) -> None:
        """Owners and federated credentials of each mail-capable app registration; the consenting users."""
        limit = asyncio.Semaphore(PER_APP_CONCURRENCY)

        async def one(f: m.AppFinding) -> None:
            if f.application_object_id is None:
                f.owners_note = ("its app registration is in its home tenant" if f.credentials_known is False
                                 else "a managed identity has no app registration"
                                 if f.service_principal_type == m.MANAGED_IDENTITY else None)
            else:
                async with limit:
                    base = f"applications/{f.application_object_id}"
                    owners, fics = await asyncio.gather(
                        self.list(f"{base}/owners", None, f"the owners of {f.display_name}"),
                        self.list(f"{base}/federatedIdentityCredentials", None,
                                  f"the federated credentials of {f.display_name}"))
                f.owners = [m.owner(o) for o in owners.items]
                if owners.error is not None:
                    f.owners_note = owners.error.sentence()
                    self._partial(owners)
                f.credentials += [m.federated(c) for c in fics.items]
                self._partial(fics)
            reason = m.evidence_only(f)
            f.evidence_only, f.evidence_only_reason = reason is not None, reason

        await asyncio.gather(*(one(f) for f in findings))
        await self._users(findings)

    async def _users(self, findings: builtins.list[m.AppFinding]) -> None:
        ids = sorted({p.user_id for f in findings for p in f.permissions if p.user_id})
        if not ids:
            return
        found: dict[str, dict] = {}
        forbidden = False
        if len(ids) > USERS_LISTED_FROM:
            listing = await self.list("users", {"$top": "999", "$select": USER_SELECT}, "the list of users")
            found = {str(u.get("id")).lower(): u for u in listing.items}
            forbidden = listing.error is not None and listing.error.forbidden and not listing.items
            if not forbidden:
                self._partial(listing)
        else:
            limit = asyncio.Semaphore(PER_APP_CONCURRENCY)

            async def one(uid: str) -> ReadError | dict:
                async with limit:
                    return await self.reader.get(f"{self.graph}/users/{uid}", {"$select": USER_SELECT},
                                                 f"the user {uid}")

            for uid, body in zip(ids, await asyncio.gather(*(one(u) for u in ids)), strict=True):
                if isinstance(body, dict):
                    found[uid] = body
                elif body.forbidden:
                    forbidden = True
        if forbidden:
            self.out.note("users_unreadable", "consenting users are shown by object id only: the monitor app lacks "
                          "the Microsoft Graph application permission User.Read.All (or Directory.Read.All), which "
                          "shows their names and sign-in addresses (the account a delegated integration signs in as)",
                          "User.Read.All")
        for f in findings:
            uids = sorted({p.user_id for p in f.permissions if p.user_id})
            f.users = [m.ConsentingUser(u, (found.get(u) or {}).get("userPrincipalName"),
                                        (found.get(u) or {}).get("displayName"), (found.get(u) or {}).get("mail"))
                       for u in uids]


def exit_code(results: list[m.TenantDiscovery]) -> int:
    """3 when a tenant could not be read at all, else 1 when a list is incomplete, else 0 (notes about optional
    permissions leave it 0: what they hide is said)."""
    if any(r.status == "error" for r in results):
        return 3
    if any(r.status == "partial" for r in results):
        return 1
    return 0


def discover(config: Config, tokens: Any, tenants: list[str], **options: Any) -> list[m.TenantDiscovery]:
    return asyncio.run(Discovery(config, tokens, **options).run(tenants))
