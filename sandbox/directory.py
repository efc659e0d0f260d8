"""Graph v1.0 directory reads: the tenant-wide discovery of what can touch mail (issue 17, "onboarding").

Everything is derived from the token's tenant (`tid`): its app registrations (`Tenant.apps`), the service
principals of foreign multitenant apps and managed identities (`Tenant.service_principals`), and the two resource
service principals every tenant has (Microsoft Graph; Office 365 Exchange Online unless `exchange_online: false`).
Same bearer validation as the rest of Graph (401 `InvalidAuthenticationToken`); errors in Graph's shape
`{"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"}}}`.

Endpoints (all GET, `/v1.0/...`)
-------------------------------
Permission sets (any one, in app-only `roles` or delegated `scp`):
  APPS = Application.Read.All, Application.ReadWrite.All, Directory.Read.All, Directory.ReadWrite.All
  GRANTS = Directory.Read.All, Directory.ReadWrite.All, DelegatedPermissionGrant.Read.All,
           DelegatedPermissionGrant.ReadWrite.All
  USERS = User.Read.All, User.ReadBasic.All, User.ReadWrite.All, Directory.Read.All, Directory.ReadWrite.All

- `applications` (APPS): collection of application
- `applications/{id}`, `applications(appId='{appId}')` (APPS, or ...ReadWrite.OwnedBy for an owner; graph.py,
  unchanged): one application
- `applications/{id}/owners`, `applications(appId='..')/owners` (APPS): collection of directoryObject
- `applications/{id}/federatedIdentityCredentials`, `applications(appId='..')/federatedIdentityCredentials`
  (APPS): collection of federatedIdentityCredential
- `servicePrincipals` (APPS): collection of servicePrincipal
- `servicePrincipals/{id}`, `servicePrincipals(appId='{appId}')` (APPS): one servicePrincipal
- `servicePrincipals/{id}/appRoleAssignedTo`, `servicePrincipals(appId='..')/appRoleAssignedTo` (APPS):
  collection of appRoleAssignment, every grant of THIS service principal's app roles (ask Microsoft Graph's and
  Exchange Online's service principals), and the users assigned to an app (appRoleId
  00000000-0000-0000-0000-000000000000, principalType "User") when asked on an app's service principal
- `servicePrincipals/{id}/appRoleAssignments`, `servicePrincipals(appId='..')/appRoleAssignments` (APPS):
  collection of appRoleAssignment, the app roles granted TO this service principal
- `oauth2PermissionGrants` (GRANTS): collection of oAuth2PermissionGrant
- `users` (USERS): collection of user (`id userPrincipalName displayName mail proxyAddresses accountEnabled`)
- `users/{id or UPN}`: one user (graph.py, unchanged)
Other methods on these paths are not served here (graph.py answers as before). Delegated tokens are accepted
with the scopes; the directory role Microsoft also requires of the signed-in user is not modelled (**assumption**).

Refusals, checked in this order:
1. permission missing -> 403 `Authorization_RequestDenied` "Insufficient privileges to complete the operation."
2. `$top` not an integer in 1..999 -> 400 `Request_UnsupportedQuery`
   "Invalid page size specified: '<n>'. Must be between 1 and 999 inclusive."
3. `$select` naming an unknown property -> 400 `Request_BadRequest`
   "Could not find a property named '<x>' on type 'microsoft.graph.<type>'."
4. `$filter` on a property not supported -> 400 `Request_UnsupportedQuery`
   "Unsupported or invalid query filter clause specified for property '<p>' of resource '<Type>'.";
   a clause that is not `<property> eq '<value>'` -> 400 `BadRequest` "Invalid filter clause"
5. `$skiptoken` not one this sandbox issued for this listing (garbage, another listing, another tenant), or a
   page fault of status 400 -> 400 `Directory_ExpiredPageToken`
   "The specified page token value has expired and can no longer be included in your request."
6. unknown application / service principal (`{id}` or `appId`) -> 404 `Request_ResourceNotFound`
   "Resource '<id>' does not exist or one of its queried reference-property objects are not present."
7. page fault (control op `add_page_fault`) -> its status: 503 `ServiceUnavailable` / 429 `TooManyRequests`
   (with `Retry-After`), 400 as in 5.

Query options
-------------
- `$top` (default 100, 1..999), `$select` (comma-separated, case-insensitive; `id` is NOT forced in),
  `$skiptoken` (opaque; only from `@odata.nextLink`), `$filter` (below). `$count`, `$orderby`, `$expand`,
  `$search` and the `ConsistencyLevel` header are ignored.
- `$filter` (clauses joined by ` and `, values in single quotes; GUID values unquoted are accepted too):
  applications: `appId eq`, `displayName eq`; servicePrincipals: `appId eq`, `servicePrincipalType eq`,
  `displayName eq`; oauth2PermissionGrants: `clientId eq`, `resourceId eq`, `consentType eq`,
  `principalId eq`; appRoleAssignedTo / appRoleAssignments: `principalId eq`, `resourceId eq`; users: `id eq`,
  `userPrincipalName eq`, `mail eq`. Anything else: 400 `Request_UnsupportedQuery` (4.).
- Order: stable, by object `id` (keyset paging). Following `@odata.nextLink` to the end yields every object
  exactly once, even when objects are added or removed between pages (added ones show only if their id sorts
  after the page already read).

Reply shapes
------------
Collection: `{"@odata.context": "<base>/v1.0/$metadata#<set>", "value": [...], "@odata.nextLink": "<absolute URL
with the same $top/$select/$filter and $skiptoken=...>"}` (nextLink only when more remain). With `$select` the
context is `$metadata#<set>(<a>,<b>)`. Entity: `{"@odata.context": "<base>/v1.0/$metadata#<set>/$entity", ...}`.
Contexts: `applications`, `servicePrincipals`, `oauth2PermissionGrants`, `users`,
`servicePrincipals('<id>')/appRoleAssignedTo`, `servicePrincipals('<id>')/appRoleAssignments`,
`directoryObjects` (owners), `applications('<id>')/federatedIdentityCredentials`.
Headers: `OData-Version: 4.0`, `request-id`, `client-request-id` (echoed).

application: `id deletedDateTime appId applicationTemplateId createdDateTime description displayName
identifierUris isFallbackPublicClient publisherDomain signInAudience tags keyCredentials passwordCredentials
publicClient web requiredResourceAccess` (as graph.application_json) where
  `signInAudience` = `AzureADMyOrg` | `AzureADMultipleOrgs`;
  `keyCredentials` = [{customKeyIdentifier (SHA-1 thumbprint), displayName, endDateTime, key: null, keyId,
  startDateTime, type: "AsymmetricX509Cert", usage: "Verify"}];
  `passwordCredentials` = [{customKeyIdentifier: null, displayName, endDateTime, hint, keyId, secretText: null,
  startDateTime}];
  `requiredResourceAccess` = [{resourceAppId, resourceAccess: [{id, type: "Role" | "Scope"}]}] from the app's
  configured application (Role) and delegated (Scope) permissions in its home tenant.
servicePrincipal: `id deletedDateTime accountEnabled alternativeNames appDisplayName appDescription appId
appOwnerOrganizationId appRoleAssignmentRequired createdDateTime description displayName homepage loginUrl
logoutUrl notes preferredSingleSignOnMode replyUrls servicePrincipalNames servicePrincipalType signInAudience
tags tokenEncryptionKeyId keyCredentials passwordCredentials appRoles oauth2PermissionScopes
verifiedPublisher info`
  `servicePrincipalType` = `Application` | `ManagedIdentity`; `appOwnerOrganizationId` = the home tenant id
  (Microsoft's tenant f8cdef31-a31e-4b4a-93e4-5f571e91255a for Microsoft Graph / Exchange Online; null for
  managed identities: **assumption**, not captured); `signInAudience` = the app's (`AzureADMultipleOrgs` for
  Microsoft's resources and, **assumption**, managed identities); `alternativeNames` = [] for apps,
  `["isExplicit=False|True", "<Azure resource id>"]` for managed identities; `keyCredentials` /
  `passwordCredentials` = [] for app service principals (the app's credentials live on the application
  object); a managed identity has one keyCredential (its certificate, type AsymmetricX509Cert, usage Verify;
  **assumption**: shape as for apps); `appRoles` =
  [{id, value, allowedMemberTypes: ["Application"], displayName, description, isEnabled, origin: "Application"}]
  and `oauth2PermissionScopes` = [{id, value, type: "Admin" | "User", adminConsentDisplayName,
  adminConsentDescription, userConsentDisplayName, userConsentDescription, isEnabled}] filled for Microsoft
  Graph and Exchange Online (see PERMISSIONS), [] for the tenant's own apps.
appRoleAssignment: `id deletedDateTime appRoleId createdDateTime principalDisplayName principalId principalType
("ServicePrincipal") resourceDisplayName resourceId` (principalId = the client service principal's object id,
resourceId = the resource service principal's object id, appRoleId from PERMISSIONS). A user assigned to an app
(`assigned_users`) shows on the app's service principal's appRoleAssignedTo with principalType "User" and appRoleId
00000000-0000-0000-0000-000000000000 (default access), as Entra lists assignments.
oAuth2PermissionGrant: `id clientId consentType principalId resourceId scope` (clientId = the client service
principal's object id; admin consent: consentType `AllPrincipals`, principalId null, one grant per (client,
resource); a user's own consent: `Principal`, principalId = the user's object id, one grant per (client, user,
resource); scope = the scopes space-separated, sorted).
directoryObject (owners): users `{"@odata.type": "#microsoft.graph.user", id, displayName, userPrincipalName,
mail}`, service principals `{"@odata.type": "#microsoft.graph.servicePrincipal", id, appId, displayName,
servicePrincipalType}`.
federatedIdentityCredential: `id name issuer subject audiences description` (audiences default
["api://AzureADTokenExchange"]).

Client service principals are the tenant's apps' (`App.sp_object_id`), foreign apps' and managed identities'
(`Tenant.service_principals`); app roles and grants come from their consent in THIS tenant (a multitenant app's
home consent is not shown elsewhere). Permission names outside PERMISSIONS get a fixed uuid5 id (not Microsoft's).

Ids are stable for a given scenario: the application object id (`object_id`), its service principal object id
(`sp_object_id`), resource service principals (uuid5 of tenant and resource appId, as audit.resource_sp_id), grant
and assignment ids (derived from the ids they join). Microsoft's permission ids: `PERMISSIONS` below.

Control ops (sandbox.ops / ControlClient)
-----------------------------------------
`add_foreign_service_principal(tenant, app_id, home_tenant, ...)`, `add_managed_identity(tenant, ...)`,
`delete_directory_service_principal(tenant, app_id)`, `add_federated_credential(app_id, name, issuer, subject, ...)`,
`remove_federated_credential(app_id, id)`, `set_sign_in_audience(app_id, sign_in_audience)`: the scenario's
`service_principals` / `managed_identities` / `federated_credentials` / `sign_in_audience` at run time.
`add_page_fault(listing, page, status=503, retry_after=5, count=1, tenant=None) -> {"id"}`: request number `page`
(1 = the first request, without `$skiptoken`; 2 = the first nextLink ...) of the listing named `listing`
(`applications`, `servicePrincipals`, `oauth2PermissionGrants`, `users`, `appRoleAssignedTo`,
`appRoleAssignments`, `owners`, `federatedIdentityCredentials`) answers `status` `count` times (null: until
cleared); then that same URL answers normally. Listed in `GET /_sandbox/state` `faults`; `clear_faults` (id or all)
removes it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .audit import resource_sp_id
from .errors import graph_error
from .state import (
    EXCHANGE,
    EXCHANGE_APP_ID,
    GRAPH,
    GRAPH_APP_ID,
    MICROSOFT_TENANT_ID,
    RESOURCES,
    SP_APPLICATION,
    SP_MANAGED_IDENTITY,
    App,
    Fault,
    ServicePrincipal,
    State,
    Tenant,
    new_id,
)

# -- Microsoft's permission ids ------------------------------------------------------------------------------------
# (resource, kind, value) -> (id, display name). Role = application permission (app role), Scope = delegated.
# Sources: Microsoft Graph: microsoftgraph/microsoft-graph-docs (ru-RU localisation)
#   concepts/includes/permissions-ids.md, Microsoft's generated table of Graph permission ids
#   (https://github.com/microsoftgraph/microsoft-graph-docs.ru-RU/blob/main/concepts/includes/permissions-ids.md);
#   DelegatedPermissionGrant.Read.All (role) and User.ReadBasic.All (role) are newer than that table: their ids
#   are the ones several public setup scripts assign (code search; not read in Microsoft's docs).
# Office 365 Exchange Online: a dump of its service principal's appRoles / oauth2PermissionScopes found by code
#   search (table "Office 365 Exchange Online (00000002-0000-0ff1-ce00-000000000000)"); IMAP.AccessAsApp and
#   POP.AccessAsApp also in BohrenAn/GitHub_PowerShellScripts ExchangeOnline/GraphAPI/IMAPPOP3_OAUTH2.ps1 (a
#   requiredResourceAccess manifest); SMTP.SendAsApp 7146a1f0-... from two public app manifests (not in
#   Microsoft's docs). Exchange's Mail.Read/Mail.ReadWrite/Mail.Send app roles carry the same ids as Graph's.
PERMISSIONS: dict[tuple[str, str, str], tuple[str, str]] = {
    # Microsoft Graph, application permissions
    (GRAPH, "Role", "Mail.Read"): ("810c84a8-4a9e-49e6-bf7d-12d183f40d01", "Read mail in all mailboxes"),
    (GRAPH, "Role", "Mail.ReadWrite"): ("e2a3a72e-5f79-4c64-b1b1-878b674786c9", "Read and write mail in all mailboxes"),
    (GRAPH, "Role", "Mail.Send"): ("b633e1c5-b582-4048-a93e-9f11b44c7e96", "Send mail as any user"),
    (GRAPH, "Role", "Mail.ReadBasic"): ("6be147d2-ea4f-4b5a-a3fa-3eab6f3c140a", "Read basic mail in all mailboxes"),
    (GRAPH, "Role", "Mail.ReadBasic.All"): ("693c5e45-0940-467d-9b8a-1022fb9d42ef", "Read basic mail in all mailboxes"),
    (GRAPH, "Role", "MailboxSettings.Read"): ("40f97065-369a-49f4-947c-6a255697ae91", "Read all user mailbox settings"),
    (GRAPH, "Role", "MailboxSettings.ReadWrite"): ("6931bccd-447a-43d1-b442-00a195474933",
                                                   "Read and write all user mailbox settings"),
    (GRAPH, "Role", "Calendars.Read"): ("798ee544-9d2d-430c-a058-570e29e34338", "Read calendars in all mailboxes"),
    (GRAPH, "Role", "Application.Read.All"): ("9a5d68dd-52b0-4cc2-bd40-abcf44ac3a30", "Read all applications"),
    (GRAPH, "Role", "Application.ReadWrite.All"): ("1bfefb4e-e0b5-418b-a88f-73c46d2cc8e9",
                                                   "Read and write all applications"),
    (GRAPH, "Role", "Application.ReadWrite.OwnedBy"): ("18a4783c-866b-4cc7-a460-3d5e5662c884",
                                                       "Manage apps that this app creates or owns"),
    (GRAPH, "Role", "Directory.Read.All"): ("7ab1d382-f21e-4acd-a863-ba3e13f7da61", "Read directory data"),
    (GRAPH, "Role", "Directory.ReadWrite.All"): ("19dbc75e-c2e2-444c-a770-ec69d8559fc7",
                                                 "Read and write directory data"),
    (GRAPH, "Role", "DelegatedPermissionGrant.Read.All"): ("81b4724a-58aa-41c1-8a55-84ef97466587",
                                                           "Read all delegated permission grants"),
    (GRAPH, "Role", "DelegatedPermissionGrant.ReadWrite.All"): ("8e8e4742-1d95-4f68-9d56-6ee75648c72a",
                                                                "Manage all delegated permission grants"),
    (GRAPH, "Role", "User.Read.All"): ("df021288-bdef-4463-88db-98f22de89214", "Read all users' full profiles"),
    (GRAPH, "Role", "User.ReadBasic.All"): ("97235f07-e226-4f63-ace3-39588e11d3a1", "Read all users' basic profiles"),
    (GRAPH, "Role", "User.ReadWrite.All"): ("741f803b-c850-494e-b5df-cde7c675a1ca", "Read and write all users' full "
                                            "profiles"),
    (GRAPH, "Role", "AuditLog.Read.All"): ("b0afded3-3588-46d8-8b3d-9842eff778da", "Read all audit log data"),
    (GRAPH, "Role", "ServiceHealth.Read.All"): ("79c261e0-fe76-4144-aad5-bdc68fbe4037", "Read service health"),
    (GRAPH, "Role", "Reports.Read.All"): ("230c1aed-a721-4c5d-9cb4-a90514e508ef", "Read all usage reports"),
    # Microsoft Graph, delegated permissions
    (GRAPH, "Scope", "User.Read"): ("e1fe6dd8-ba31-4d61-89e7-88639da4683d", "Sign in and read user profile"),
    (GRAPH, "Scope", "User.ReadBasic.All"): ("b340eb25-3456-403f-be2f-af7a0d370277", "Read all users' basic profiles"),
    (GRAPH, "Scope", "User.Read.All"): ("a154be20-db9c-4678-8ab7-66f6cc099a59", "Read all users' full profiles"),
    (GRAPH, "Scope", "Mail.Read"): ("570282fd-fa5c-430d-a7fd-fc8dc98a9dca", "Read user mail"),
    (GRAPH, "Scope", "Mail.ReadWrite"): ("024d486e-b451-40bb-833d-3e66d98c5c73", "Read and write access to user mail"),
    (GRAPH, "Scope", "Mail.Send"): ("e383f46e-2787-4529-855e-0e479a3ffac0", "Send mail as a user"),
    (GRAPH, "Scope", "Mail.ReadBasic"): ("a4b8392a-d8d1-4954-a029-8e668a39a170", "Read user basic mail"),
    (GRAPH, "Scope", "Mail.Read.Shared"): ("7b9103a5-4610-446b-9670-80643382c1fa", "Read user and shared mail"),
    (GRAPH, "Scope", "Mail.ReadWrite.Shared"): ("5df07973-7d5d-46ed-9847-1271055cbd51",
                                                "Read and write user and shared mail"),
    (GRAPH, "Scope", "Mail.Send.Shared"): ("a367ab51-6b49-43bf-a716-a1fb06d2a174", "Send mail on behalf of others"),
    (GRAPH, "Scope", "MailboxSettings.Read"): ("87f447af-9fa4-4c32-9dfa-4a57a73d18ce", "Read user mailbox settings"),
    (GRAPH, "Scope", "Calendars.Read"): ("465a38f9-76ea-45b9-9f34-9e8b0d4b0b42", "Read user calendars"),
    (GRAPH, "Scope", "IMAP.AccessAsUser.All"): ("652390e4-393a-48de-9484-05f9b1212954",
                                                "Read and write access to mailboxes via IMAP."),
    (GRAPH, "Scope", "POP.AccessAsUser.All"): ("d7b7f2d9-0f45-4ea1-9d42-e50810c06991",
                                               "Read and write access to mailboxes via POP."),
    (GRAPH, "Scope", "SMTP.Send"): ("258f6531-6087-4cc4-bb90-092c5fb3ed3f", "Send emails from mailboxes using SMTP "
                                    "AUTH."),
    (GRAPH, "Scope", "EWS.AccessAsUser.All"): ("9769c687-087d-48ac-9cb3-c37dde652038",
                                               "Access mailboxes as the signed-in user via Exchange Web Services"),
    (GRAPH, "Scope", "Application.Read.All"): ("c79f8feb-a9db-4090-85f9-90d820caa0eb", "Read applications"),
    (GRAPH, "Scope", "Directory.Read.All"): ("06da0dbc-49e2-44d2-8312-53f166ab848a", "Read directory data"),
    (GRAPH, "Scope", "AuditLog.Read.All"): ("e4c9e354-4dc5-45b8-9e7c-e1393b0b1a20", "Read audit log data"),
    (GRAPH, "Scope", "offline_access"): ("7427e0e9-2fba-42fe-b0c0-848c9e6a8182", "Maintain access to data you have "
                                         "given it access to"),
    (GRAPH, "Scope", "openid"): ("37f7f235-527c-4136-accd-4a02d197296e", "Sign users in"),
    (GRAPH, "Scope", "profile"): ("14dad69e-099b-42c9-810b-d002981feec1", "View users' basic profile"),
    (GRAPH, "Scope", "email"): ("64a6cdd6-aab1-4aaf-94b8-3cc8405e90d0", "View users' email address"),
    # Office 365 Exchange Online, application permissions
    (EXCHANGE, "Role", "full_access_as_app"): ("dc890d15-9560-4a4c-9b7f-a736ec74ec40",
                                               "Use Exchange Web Services with full access to all mailboxes"),
    (EXCHANGE, "Role", "IMAP.AccessAsApp"): ("5e5addcd-3e8d-4e90-baf5-964efab2b20a", "IMAP.AccessAsApp"),
    (EXCHANGE, "Role", "POP.AccessAsApp"): ("cb842b43-da6e-4506-86fe-bb12199c656d", "POP.AccessAsApp"),
    (EXCHANGE, "Role", "SMTP.SendAsApp"): ("7146a1f0-8703-45b3-9eae-527a64c00995", "SMTP.SendAsApp"),
    (EXCHANGE, "Role", "Exchange.ManageAsApp"): ("dc50a0fb-09a3-484d-be87-e023b12c6440",
                                                 "Manage Exchange As Application"),
    (EXCHANGE, "Role", "Mail.Read"): ("810c84a8-4a9e-49e6-bf7d-12d183f40d01", "Read mail in all mailboxes"),
    (EXCHANGE, "Role", "Mail.ReadWrite"): ("e2a3a72e-5f79-4c64-b1b1-878b674786c9",
                                           "Read and write mail in all mailboxes"),
    (EXCHANGE, "Role", "Mail.Send"): ("b633e1c5-b582-4048-a93e-9f11b44c7e96", "Send mail as any user"),
    (EXCHANGE, "Role", "User.Read.All"): ("bf24470f-10c1-436d-8d53-7b997eb473be", "Read all users' full profiles"),
    # Office 365 Exchange Online, delegated permissions
    (EXCHANGE, "Scope", "IMAP.AccessAsUser.All"): ("195adc35-e27b-454b-a7ed-1ecdffa1c09f",
                                                   "Read and write access to your mail via IMAP"),
    (EXCHANGE, "Scope", "POP.AccessAsUser.All"): ("fb698133-92fa-453e-a9ed-688e10f2e5ac",
                                                  "Read and write access to your mail via POP"),
    (EXCHANGE, "Scope", "SMTP.Send"): ("76faac2a-0f20-42f1-928a-50de5b9dbe52",
                                       "Access to sending emails from your mailbox using SMTP AUTH"),
    (EXCHANGE, "Scope", "EWS.AccessAsUser.All"): ("3b5f3d61-589b-4a3c-a359-5dd4b5ee5bd5",
                                                  "Access mailboxes as the signed-in user via Exchange Web Services"),
    (EXCHANGE, "Scope", "EAS.AccessAsUser.All"): ("266d2589-20b5-4f91-9a03-89247d1be8da",
                                                  "Access mailboxes via Exchange ActiveSync"),
    (EXCHANGE, "Scope", "Mail.Read"): ("185758ba-798d-4b72-9e54-429a413a2510", "Read user mail"),
    (EXCHANGE, "Scope", "Mail.ReadWrite"): ("75767999-c7a8-481e-a6b4-19458e0b30a5", "Read and write user mail"),
    (EXCHANGE, "Scope", "Mail.Send"): ("5eb43c10-865a-4259-960a-83946678f8dd", "Send mail as a user"),
    (EXCHANGE, "Scope", "Mail.Read.Shared"): ("1d894596-c906-42b1-8422-9360440c1c0c", "Read user and shared mail"),
    (EXCHANGE, "Scope", "Mail.ReadWrite.Shared"): ("b09ec548-3f99-4d0a-859c-c9b7ff53b7a9",
                                                   "Read and write user and shared mail"),
    (EXCHANGE, "Scope", "Mail.Send.Shared"): ("16572339-6149-452b-b084-280b01354687", "Send mail on behalf of others"),
    (EXCHANGE, "Scope", "User.Read"): ("6223a6d3-53ef-4f8f-982a-895b39483c61", "Read user profiles"),
    (EXCHANGE, "Scope", "Exchange.Manage"): ("ab4f2b77-0b06-4fc1-a9de-02113fc2ab7c", "Manage Exchange configuration"),
}
RESOURCE_APP_IDS = {GRAPH: GRAPH_APP_ID, EXCHANGE: EXCHANGE_APP_ID}
RESOURCE_NAMES = {GRAPH: "Microsoft Graph", EXCHANGE: "Office 365 Exchange Online"}
DEFAULT_ACCESS_ROLE = "00000000-0000-0000-0000-000000000000"  # "Default Access": a user assigned to an app
_UNKNOWN_NS = uuid.UUID("5b0c3f52-6a0f-4a54-9a53-7c55e7a1d0a1")


def permission_id(resource: str, kind: str, value: str) -> str:
    """Microsoft's id of the permission; a permission outside PERMISSIONS gets a fixed uuid5 (NOT Microsoft's id:
    the sandbox does not know it)."""
    known = PERMISSIONS.get((resource, kind, value))
    if known:
        return known[0]
    return str(uuid.uuid5(_UNKNOWN_NS, f"{resource}:{kind}:{value}"))


def required_resource_access(app: App) -> list[dict]:
    """application.requiredResourceAccess from the app's configured permissions (Role) and scopes (Scope)."""
    out = []
    for res in RESOURCES:
        access = [{"id": permission_id(res, "Role", p), "type": "Role"}
                  for p in sorted(app.app_permissions.get(res, ()))]
        access += [{"id": permission_id(res, "Scope", p), "type": "Scope"}
                   for p in sorted(app.delegated_permissions.get(res, ()))]
        if access:
            out.append({"resourceAppId": RESOURCE_APP_IDS[res], "resourceAccess": access})
    return out


def graph_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the tenant's service principals, one shape for every kind -------------------------------------------------------
@dataclass
class Principal:
    object_id: str
    app_id: str
    display_name: str
    kind: str  # Application | ManagedIdentity
    owner_org: str | None  # appOwnerOrganizationId
    enabled: bool = True
    assignment_required: bool = False
    audience: str = "AzureADMyOrg"
    created: dt.datetime | None = None
    app_permissions: dict = field(default_factory=dict)
    delegated_permissions: dict = field(default_factory=dict)
    user_grants: dict = field(default_factory=dict)
    assigned_users: set = field(default_factory=set)
    alternative_names: list = field(default_factory=list)
    reply_urls: list = field(default_factory=list)
    names: list = field(default_factory=list)  # servicePrincipalNames
    resource: str | None = None  # graph | exchange for Microsoft's resource service principals
    mi: ServicePrincipal | None = None


def principals(state: State, tenant: Tenant) -> list[Principal]:
    """Every service principal of the tenant: its apps', foreign multitenant apps', managed identities and
    Microsoft Graph's / Exchange Online's. Caller holds state.lock."""
    out = []
    for res in RESOURCES:
        if res == EXCHANGE and not tenant.exchange_online:
            continue
        names = ([GRAPH_APP_ID, "https://graph.microsoft.com", "https://graph.microsoft.com/"] if res == GRAPH else
                 [EXCHANGE_APP_ID, "https://outlook.office365.com", "https://outlook.office.com",
                  "https://outlook.office365.com/"])
        out.append(Principal(resource_sp_id(tenant, res), RESOURCE_APP_IDS[res], RESOURCE_NAMES[res], SP_APPLICATION,
                             MICROSOFT_TENANT_ID, audience="AzureADMultipleOrgs",
                             created=state.started_at - dt.timedelta(days=900), names=names, resource=res))
    for a in tenant.apps.values():
        out.append(Principal(a.sp_object_id, a.app_id, a.display_name, SP_APPLICATION, tenant.id, a.enabled,
                             a.assignment_required, a.sign_in_audience, a.created, a.app_permissions,
                             a.delegated_permissions, a.user_grants, a.assigned_users, reply_urls=list(a.redirect_uris),
                             names=[a.app_id]))
    for sp in tenant.service_principals.values():
        home = state.tenants.get(sp.home_tenant_id or "")
        home_app = home.apps.get(sp.app_id) if home else None
        mi = sp.kind == SP_MANAGED_IDENTITY
        out.append(Principal(
            sp.object_id, sp.app_id, sp.display_name, sp.kind, sp.home_tenant_id, sp.enabled, sp.assignment_required,
            "AzureADMultipleOrgs" if mi or home_app is None else home_app.sign_in_audience, sp.created,
            sp.app_permissions, sp.delegated_permissions, sp.user_grants, sp.assigned_users,
            alternative_names=list(sp.alternative_names),
            reply_urls=list(home_app.redirect_uris) if home_app else [],
            names=[sp.app_id] + ([sp.alternative_names[1]] if mi and len(sp.alternative_names) > 1 else []),
            mi=sp if mi else None))
    return out


def _roles_of(p: Principal) -> list[dict]:
    if p.resource is None:
        return []
    return [{"allowedMemberTypes": ["Application"], "description": name, "displayName": name,
             "id": pid, "isEnabled": True, "origin": "Application", "value": value}
            for (res, kind, value), (pid, name) in sorted(PERMISSIONS.items()) if res == p.resource and kind == "Role"]


def _scopes_of(p: Principal) -> list[dict]:
    if p.resource is None:
        return []
    return [{"adminConsentDescription": name, "adminConsentDisplayName": name, "id": pid, "isEnabled": True,
             "type": "Admin" if value.endswith(".All") and not value.endswith("AsUser.All") else "User",
             "userConsentDescription": name, "userConsentDisplayName": name, "value": value}
            for (res, kind, value), (pid, name) in sorted(PERMISSIONS.items())
            if res == p.resource and kind == "Scope"]


def service_principal_json(p: Principal) -> dict:
    key_credentials = []
    if p.mi is not None and p.mi.certificate_start is not None and p.mi.certificate_end is not None:
        # a managed identity's service principal shows the certificate Azure holds for it
        key_credentials = [{"customKeyIdentifier": None, "displayName": None,
                            "endDateTime": graph_time(p.mi.certificate_end), "key": None,
                            "keyId": p.mi.certificate_key_id,
                            "startDateTime": graph_time(p.mi.certificate_start), "type": "AsymmetricX509Cert",
                            "usage": "Verify"}]
    return {
        "id": p.object_id,
        "deletedDateTime": None,
        "accountEnabled": p.enabled,
        "alternativeNames": p.alternative_names,
        "appDisplayName": p.display_name,
        "appDescription": None,
        "appId": p.app_id,
        "appOwnerOrganizationId": p.owner_org,
        "appRoleAssignmentRequired": p.assignment_required,
        "createdDateTime": graph_time(p.created) if p.created else None,
        "description": None,
        "displayName": p.display_name,
        "homepage": None,
        "loginUrl": None,
        "logoutUrl": None,
        "notes": None,
        "preferredSingleSignOnMode": None,
        "replyUrls": p.reply_urls,
        "servicePrincipalNames": p.names,
        "servicePrincipalType": p.kind,
        "signInAudience": p.audience,
        "tags": ["WindowsAzureActiveDirectoryIntegratedApp"] if p.kind == SP_APPLICATION and p.resource is None else [],
        "tokenEncryptionKeyId": None,
        "keyCredentials": key_credentials,
        "passwordCredentials": [],
        "appRoles": _roles_of(p),
        "oauth2PermissionScopes": _scopes_of(p),
        "verifiedPublisher": {"displayName": None, "verifiedPublisherId": None, "addedDateTime": None},
        "info": {"logoUrl": None, "marketingUrl": None, "privacyStatementUrl": None, "supportUrl": None,
                 "termsOfServiceUrl": None},
    }


def application_json(app: App, tenant: Tenant) -> dict:
    return {
        "id": app.object_id,
        "deletedDateTime": None,
        "appId": app.app_id,
        "applicationTemplateId": None,
        "createdDateTime": graph_time(app.created),
        "description": None,
        "displayName": app.display_name,
        "identifierUris": [],
        "isFallbackPublicClient": app.public_client,
        "publisherDomain": tenant.domain,
        "signInAudience": app.sign_in_audience,
        "tags": [],
        "keyCredentials": [{
            "customKeyIdentifier": c.thumbprint,
            "displayName": c.display_name,
            "endDateTime": graph_time(c.end),
            "key": None,
            "keyId": c.key_id,
            "startDateTime": graph_time(c.start),
            "type": "AsymmetricX509Cert",
            "usage": "Verify",
        } for c in app.certificates],
        "passwordCredentials": [{
            "customKeyIdentifier": None,
            "displayName": s.display_name,
            "endDateTime": graph_time(s.end),
            "hint": s.hint,
            "keyId": s.key_id,
            "secretText": None,
            "startDateTime": graph_time(s.start),
        } for s in app.secrets],
        "publicClient": {"redirectUris": [u for u in app.redirect_uris if u.startswith("http://localhost")]},
        "web": {"redirectUris": [u for u in app.redirect_uris if not u.startswith("http://localhost")],
                "homePageUrl": None, "logoutUrl": None},
        "requiredResourceAccess": required_resource_access(app),
    }


def _b64id(*ids: str) -> str:
    """Ids shaped like Entra's appRoleAssignment / oAuth2PermissionGrant ids: the joined objects' GUID bytes in
    base64url without padding (**assumption**: the shape as seen in captured replies; decoding is not promised)."""
    raw = b"".join(uuid.UUID(i).bytes_le for i in ids)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def role_assignments(state: State, tenant: Tenant, ps: list[Principal]) -> list[dict]:
    """Every appRoleAssignment of the tenant: app roles of Microsoft Graph / Exchange Online granted to service
    principals, and users assigned to an app (default access role)."""
    by_res = {p.resource: p for p in ps if p.resource}
    out = []
    for p in ps:
        if p.resource:
            continue
        created = graph_time(p.created or state.started_at)
        for res, roles in sorted(p.app_permissions.items()):
            r = by_res.get(res)
            if r is None:
                continue
            for role in sorted(roles):
                rid = permission_id(res, "Role", role)
                out.append({"id": _b64id(p.object_id, str(uuid.uuid5(uuid.UUID(r.object_id), rid))),
                            "deletedDateTime": None, "appRoleId": rid, "createdDateTime": created,
                            "principalDisplayName": p.display_name, "principalId": p.object_id,
                            "principalType": "ServicePrincipal", "resourceDisplayName": r.display_name,
                            "resourceId": r.object_id})
        for upn in sorted(p.assigned_users):
            user = tenant.users.get(upn)
            if user is None:
                continue
            out.append({"id": _b64id(user.oid, str(uuid.uuid5(uuid.UUID(p.object_id), DEFAULT_ACCESS_ROLE))),
                        "deletedDateTime": None, "appRoleId": DEFAULT_ACCESS_ROLE, "createdDateTime": created,
                        "principalDisplayName": user.display_name or user.upn, "principalId": user.oid,
                        "principalType": "User", "resourceDisplayName": p.display_name, "resourceId": p.object_id})
    return out


def permission_grants(tenant: Tenant, ps: list[Principal]) -> list[dict]:
    """oAuth2PermissionGrants: admin consent (AllPrincipals) and each user's own consent (Principal)."""
    by_res = {p.resource: p for p in ps if p.resource}
    out = []
    for p in ps:
        if p.resource or p.kind != SP_APPLICATION:
            continue
        for res in RESOURCES:
            r = by_res.get(res)
            if r is None:
                continue
            admin = sorted(p.delegated_permissions.get(res, ()))
            if admin:
                out.append({"id": _b64id(p.object_id, r.object_id), "clientId": p.object_id,
                            "consentType": "AllPrincipals", "principalId": None, "resourceId": r.object_id,
                            "scope": " ".join(admin)})
            for upn, grants in sorted(p.user_grants.items()):
                scopes = sorted(grants.get(res, ()))
                user = tenant.users.get(upn)
                if scopes and user is not None:
                    out.append({"id": _b64id(p.object_id, r.object_id, user.oid), "clientId": p.object_id,
                                "consentType": "Principal", "principalId": user.oid, "resourceId": r.object_id,
                                "scope": " ".join(scopes)})
    return out


def user_json(user) -> dict:
    return {"id": user.oid, "userPrincipalName": user.upn, "displayName": user.display_name or user.upn,
            "mail": user.address, "proxyAddresses": list(user.proxy_addresses) or [f"SMTP:{user.address}"],
            "accountEnabled": user.enabled}


def federated_json(f) -> dict:
    return {"id": f.id, "name": f.name, "issuer": f.issuer, "subject": f.subject, "audiences": list(f.audiences),
            "description": f.description}


# -- HTTP --------------------------------------------------------------------------------------------------------
READ_APPS = {"Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"}
READ_GRANTS = {"Directory.Read.All", "Directory.ReadWrite.All", "DelegatedPermissionGrant.Read.All",
               "DelegatedPermissionGrant.ReadWrite.All"}
READ_USERS = {"User.Read.All", "User.ReadBasic.All", "User.ReadWrite.All", "Directory.Read.All",
              "Directory.ReadWrite.All"}
DEFAULT_TOP, MAX_TOP = 100, 999
LISTINGS = ("applications", "servicePrincipals", "oauth2PermissionGrants", "users", "appRoleAssignedTo",
            "appRoleAssignments", "owners", "federatedIdentityCredentials")
_ONE = r"(?:/(?P<id>[^/()]+)|\(appId='(?P<app_id>[^']*)'\))"
_ROUTES = [
    ("applications", re.compile(r"^applications$", re.I)),
    ("app_sub", re.compile(rf"^applications{_ONE}/(?P<sub>owners|federatedIdentityCredentials)$", re.I)),
    ("servicePrincipals", re.compile(r"^servicePrincipals$", re.I)),
    ("sp", re.compile(rf"^servicePrincipals{_ONE}$", re.I)),
    ("sp_sub", re.compile(rf"^servicePrincipals{_ONE}/(?P<sub>appRoleAssignedTo|appRoleAssignments)$", re.I)),
    ("oauth2PermissionGrants", re.compile(r"^oauth2PermissionGrants$", re.I)),
    ("users", re.compile(r"^users$", re.I)),
]
# $filter: the properties each listing accepts (with `eq`)
FILTERABLE = {
    "applications": ("application", ("appId", "displayName")),
    "servicePrincipals": ("servicePrincipal", ("appId", "servicePrincipalType", "displayName")),
    "oauth2PermissionGrants": ("oAuth2PermissionGrant", ("clientId", "resourceId", "consentType", "principalId")),
    "appRoleAssignedTo": ("appRoleAssignment", ("principalId", "resourceId")),
    "appRoleAssignments": ("appRoleAssignment", ("principalId", "resourceId")),
    "users": ("user", ("id", "userPrincipalName", "mail")),
    "owners": ("directoryObject", ()),
    "federatedIdentityCredentials": ("federatedIdentityCredential", ()),
}
TYPES = {"applications": "application", "servicePrincipals": "servicePrincipal",
         "oauth2PermissionGrants": "oAuth2PermissionGrant", "appRoleAssignedTo": "appRoleAssignment",
         "appRoleAssignments": "appRoleAssignment", "users": "user", "owners": "directoryObject",
         "federatedIdentityCredentials": "federatedIdentityCredential"}
_CLAUSE = re.compile(r"^\s*(?P<prop>[A-Za-z]+)\s+eq\s+(?:'(?P<q>(?:[^']|'')*)'|(?P<bare>[0-9A-Za-z-]+))\s*$")
_NOT_FOUND = "Resource '{}' does not exist or one of its queried reference-property objects are not present."
_DENIED = "Insufficient privileges to complete the operation."
# Directory_ExpiredPageToken: the code Microsoft's older Graph clients map to a PageNotAvailableException and users
# hit on nextLinks (https://github.com/microsoftgraph/msgraph-sdk-java/issues/368); the message as quoted by a
# public test suite of Graph paging found by code search (**assumption**: not read in a captured reply). Graph
# keeps directory skiptokens valid (microsoftgraph/msgraph-sdk-javascript#1463): the sandbox answers this only to
# tokens it did not issue for the listing and to a page fault of status 400.
EXPIRED_TOKEN = "The specified page token value has expired and can no longer be included in your request."


def known_properties(type_name: str) -> set[str]:
    """The properties `$select` may name on a type (checked even when a listing is empty)."""
    if type_name == "application":
        return set(application_json(App(app_id="", tenant_id="", display_name=""), Tenant(id="", domain="")))
    if type_name == "servicePrincipal":
        return set(service_principal_json(Principal("", "", "", SP_APPLICATION, None)))
    return {
        "oAuth2PermissionGrant": {"id", "clientId", "consentType", "principalId", "resourceId", "scope"},
        "appRoleAssignment": {"id", "deletedDateTime", "appRoleId", "createdDateTime", "principalDisplayName",
                              "principalId", "principalType", "resourceDisplayName", "resourceId"},
        "user": {"id", "userPrincipalName", "displayName", "mail", "proxyAddresses", "accountEnabled"},
        "federatedIdentityCredential": {"id", "name", "issuer", "subject", "audiences", "description"},
        "directoryObject": {"id", "deletedDateTime", "displayName", "userPrincipalName", "mail", "appId",
                            "servicePrincipalType"},
    }.get(type_name, set())


class GraphRefusal(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def _select(request: Request) -> list[str]:
    return [x.strip() for x in (request.query_params.get("$select") or "").split(",") if x.strip()]


def _top(request: Request) -> int:
    raw = request.query_params.get("$top")
    if raw is None:
        return DEFAULT_TOP
    try:
        top = int(raw)
    except ValueError:
        top = -1
    if not 1 <= top <= MAX_TOP:
        # turbot/steampipe-plugin-azuread quotes Graph's answer to $top=1000 on directory objects:
        # "Request_UnsupportedQuery: Invalid page size specified: '1000'. Must be between 1 and 999 inclusive."
        raise GraphRefusal(400, "Request_UnsupportedQuery",
                           f"Invalid page size specified: '{raw}'. Must be between 1 and 999 inclusive.")
    return top


def _filters(request: Request, listing: str) -> list[tuple[str, str]]:
    raw = request.query_params.get("$filter")
    if not raw:
        return []
    type_name, allowed = FILTERABLE[listing]
    by_lower = {a.lower(): a for a in allowed}
    out = []
    for clause in re.split(r"\s+and\s+", raw.strip(), flags=re.I):
        m = _CLAUSE.match(clause)
        if not m:
            prop = re.match(r"^\s*\(?\s*(?:\w+\()?\s*([A-Za-z/]+)", clause)
            if prop and prop.group(1).lower() not in by_lower and prop.group(1).isalpha():
                raise GraphRefusal(400, "Request_UnsupportedQuery", "Unsupported or invalid query filter clause "
                                   f"specified for property '{prop.group(1)}' of resource "
                                   f"'{type_name[0].upper() + type_name[1:]}'.")
            raise GraphRefusal(400, "BadRequest", "Invalid filter clause")
        prop = m.group("prop")
        if prop.lower() not in by_lower:
            raise GraphRefusal(400, "Request_UnsupportedQuery", "Unsupported or invalid query filter clause specified "
                               f"for property '{prop}' of resource '{type_name[0].upper() + type_name[1:]}'.")
        value = m.group("q").replace("''", "'") if m.group("q") is not None else m.group("bare")
        out.append((by_lower[prop.lower()], value))
    return out


def _matches(item: dict, filters: list[tuple[str, str]]) -> bool:
    return all(str(item.get(k) if item.get(k) is not None else "null").lower() == v.lower() for k, v in filters)


def _encode_token(key: str, after: str, page: int) -> str:
    raw = json.dumps({"k": key, "a": after, "p": page}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, key: str) -> tuple[str, int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if data["k"] != key:
            raise ValueError("another listing's token")
        return str(data["a"]), int(data["p"])
    except (ValueError, KeyError, TypeError) as exc:
        raise GraphRefusal(400, "Directory_ExpiredPageToken", EXPIRED_TOKEN) from exc


def _fault_reply(fault: Fault) -> GraphRefusal:
    retry = {"Retry-After": str(fault.retry_after)}
    if fault.status == 400:
        return GraphRefusal(400, "Directory_ExpiredPageToken", EXPIRED_TOKEN)
    if fault.status == 429:
        return GraphRefusal(429, "TooManyRequests", "Too many requests.", retry)
    if fault.status == 503:
        return GraphRefusal(503, "ServiceUnavailable", "The service is temporarily unavailable.", retry)
    if fault.status == 504:
        return GraphRefusal(504, "GatewayTimeout", "The gateway did not receive a timely response.", retry)
    return GraphRefusal(int(fault.status or 500), "UnknownError", "", retry)


class Directory:
    def __init__(self, state: State, base: str):
        self.state = state
        self.base = base  # https://host:port/v1.0
        # tenant id -> object id -> app: the per-app reads of a 10,000-app tenant scanned every app each (bench/)
        self._by_object: dict[str, dict[str, App]] = {}

    async def dispatch(self, request: Request, claims: dict, tenant: Tenant, rest: str) -> Response | None:
        if request.method != "GET":
            return None
        path = rest.rstrip("/")
        found = next(((name, rx.match(path)) for name, rx in _ROUTES if rx.match(path)), None)
        if found is None:
            return None
        name, m = found
        crid = request.headers.get("client-request-id")
        try:
            return self._answer(request, claims, tenant, path, name, m)
        except GraphRefusal as r:
            return graph_error(r.status, r.code, r.message, crid, r.headers)

    # -- routing --------------------------------------------------------------------------------------------------
    def _answer(self, request: Request, claims: dict, tenant: Tenant, path: str, name: str, m: re.Match) -> Response:
        granted = set(claims.get("roles") or []) | set((claims.get("scp") or "").split())
        need = READ_GRANTS if name == "oauth2PermissionGrants" else READ_USERS if name == "users" else READ_APPS
        if not granted & need:
            raise GraphRefusal(403, "Authorization_RequestDenied", _DENIED)
        listing = m.groupdict().get("sub") or name
        listing = next((x for x in LISTINGS if x.lower() == listing.lower()), listing)
        with self.state.lock:
            if name == "sp":
                p = self._principal(tenant, m)
                return self._entity(request, "servicePrincipals", "servicePrincipal", service_principal_json(p))
            top, select, filters = _top(request), _select(request), _filters(request, listing)
            items, context = self._collection(tenant, name, listing, m)
        return self._page(request, tenant, path, listing, items, context, top, select, filters)

    def _principal(self, tenant: Tenant, m: re.Match) -> Principal:
        ps = principals(self.state, tenant)
        ident = m.group("id") or m.group("app_id") or ""
        if m.group("app_id") is not None:
            p = next((p for p in ps if p.app_id.lower() == ident.lower()), None)
        else:
            p = next((p for p in ps if p.object_id.lower() == ident.lower()), None)
        if p is None:
            raise GraphRefusal(404, "Request_ResourceNotFound", _NOT_FOUND.format(ident))
        return p

    def _application(self, tenant: Tenant, m: re.Match) -> App:
        ident = m.group("id") or m.group("app_id") or ""
        if m.group("app_id") is not None:
            app = tenant.apps.get(ident.lower())
        else:
            app = self._by_object.get(tenant.id, {}).get(ident.lower())
            if app is None or tenant.apps.get(app.app_id) is not app:  # not indexed yet, or replaced since
                self._by_object[tenant.id] = index = {a.object_id.lower(): a for a in tenant.apps.values()}
                app = index.get(ident.lower())
        if app is None:
            raise GraphRefusal(404, "Request_ResourceNotFound", _NOT_FOUND.format(ident))
        return app

    def _collection(self, tenant: Tenant, name: str, listing: str, m: re.Match) -> tuple[list[dict], str]:
        base = f"{self.base}/$metadata#"
        if name == "applications":
            return [application_json(a, tenant) for a in tenant.apps.values()], base + "applications"
        if name == "servicePrincipals":
            return [service_principal_json(p) for p in principals(self.state, tenant)], base + "servicePrincipals"
        if name == "users":
            return [user_json(u) for u in tenant.users.values()], base + "users"
        if name == "oauth2PermissionGrants":
            return permission_grants(tenant, principals(self.state, tenant)), base + "oauth2PermissionGrants"
        if name == "sp_sub":
            p = self._principal(tenant, m)
            every = role_assignments(self.state, tenant, principals(self.state, tenant))
            key = "resourceId" if listing == "appRoleAssignedTo" else "principalId"
            return ([a for a in every if a[key] == p.object_id],
                    f"{base}servicePrincipals('{p.object_id}')/{listing}")
        app = self._application(tenant, m)  # app_sub
        if listing == "federatedIdentityCredentials":
            return ([federated_json(f) for f in app.federated_credentials],
                    f"{base}applications('{app.object_id}')/federatedIdentityCredentials")
        return self._owners(tenant, app), base + "directoryObjects"

    def _owners(self, tenant: Tenant, app: App) -> list[dict]:
        out = []
        ps: dict | None = None  # the service principals, built only for an owner that is not a user
        for owner in sorted(app.owners):
            user = tenant.users.get(owner)
            if user is not None:
                out.append({"@odata.type": "#microsoft.graph.user", "id": user.oid,
                            "displayName": user.display_name or user.upn, "userPrincipalName": user.upn,
                            "mail": user.address})
                continue
            if ps is None:
                ps = {p.app_id.lower(): p for p in principals(self.state, tenant)}
            if owner in ps:
                p = ps[owner]
                out.append({"@odata.type": "#microsoft.graph.servicePrincipal", "id": p.object_id, "appId": p.app_id,
                            "displayName": p.display_name, "servicePrincipalType": p.kind})
        return out

    # -- replies --------------------------------------------------------------------------------------------------
    @staticmethod
    def _headers(request: Request) -> dict:
        crid = request.headers.get("client-request-id")
        rid = new_id()
        return {"OData-Version": "4.0", "request-id": rid, "client-request-id": crid or rid}

    @staticmethod
    def _project(items: list[dict], select: list[str], type_name: str) -> tuple[list[dict], list[str]]:
        if not select:
            return items, []
        known = {k.lower(): k for k in known_properties(type_name)}
        for it in items:
            known.update({k.lower(): k for k in it})
        unknown = [x for x in select if x.lower() not in known]
        if unknown:
            raise GraphRefusal(400, "Request_BadRequest",
                               f"Could not find a property named '{unknown[0]}' on type 'microsoft.graph.{type_name}'.")
        names = [known[x.lower()] for x in select]
        keep = {"@odata.type"}
        return [{k: v for k, v in it.items() if k in names or k in keep} for it in items], names

    def _entity(self, request: Request, entity_set: str, type_name: str, body: dict) -> Response:
        select = _select(request)
        (body,), names = self._project([body], select, type_name)
        context = f"{self.base}/$metadata#{entity_set}" + (f"({','.join(names)})" if names else "") + "/$entity"
        return JSONResponse({"@odata.context": context, **body}, headers=self._headers(request))

    def _page(self, request: Request, tenant: Tenant, path: str, listing: str, items: list[dict], context: str,
              top: int, select: list[str], filters: list[tuple[str, str]]) -> Response:
        key = "|".join((tenant.id, path.lower(), request.query_params.get("$filter") or ""))
        token = request.query_params.get("$skiptoken")
        after, page = ("", 1) if token is None else _decode_token(token, key)
        fault = self.state.take_page_fault(tenant.id, listing, page)
        if fault is not None:
            raise _fault_reply(fault)
        rows = sorted((it for it in items if _matches(it, filters)), key=lambda it: str(it["id"]))
        rows = [it for it in rows if str(it["id"]) > after]
        chunk, more = rows[:top], len(rows) > top
        chunk, names = self._project(chunk, select, TYPES[listing])
        if names:
            context += f"({','.join(names)})"
        body: dict = {"@odata.context": context, "value": chunk}
        if more:
            params = [(k, v) for k, v in request.query_params.multi_items() if k != "$skiptoken"]
            params.append(("$skiptoken", _encode_token(key, str(rows[top - 1]["id"]), page + 1)))
            body["@odata.nextLink"] = f"{self.base}/{path}?{urlencode(params, safe='$,')}"
        return JSONResponse(body, headers=self._headers(request))


# -- the control op -------------------------------------------------------------------------------------------------
def add_page_fault(state: State, listing: str, page: int, status: int = 503, retry_after: int = 5,
                   count: int | None = 1, tenant: str | None = None) -> dict:
    """Request number `page` of the Graph listing `listing` (see LISTINGS) answers `status` (503/429/504 with
    Retry-After, 400 Directory_ExpiredPageToken) `count` times (None: until clear_faults)."""
    name = next((x for x in LISTINGS if x.lower() == str(listing).lower()), None)
    if name is None:
        raise ValueError(f"listing must be one of {LISTINGS}")
    if int(page) < 1:
        raise ValueError("page counts from 1 (the request without $skiptoken)")
    tid = None
    if tenant is not None:
        tid = state.require_tenant(tenant).id
    f = Fault(id=new_id(), path_prefix=f"page-fault:{name}", status=int(status), count=count,
              retry_after=int(retry_after), listing=name, page=int(page), tenant=tid)
    with state.lock:
        state.faults.append(f)
    return {"id": f.id}


def add_foreign_service_principal(state: State, tenant: str, **spec) -> dict:
    """Consent in `tenant` to another tenant's multitenant app (scenario `service_principals` entry). No directory
    audit is written (**sandbox limitation**)."""
    from .scenario import add_service_principal, check_foreign_sp

    sp = add_service_principal(state, tenant, spec, SP_APPLICATION)
    try:
        check_foreign_sp(state, sp)
    except ValueError:
        with state.lock:
            del state.tenants[sp.tenant_id].service_principals[sp.app_id]
        raise
    return {"app_id": sp.app_id, "object_id": sp.object_id, "home_tenant": sp.home_tenant_id}


def add_managed_identity(state: State, tenant: str, **spec) -> dict:
    """A managed identity's service principal (scenario `managed_identities` entry)."""
    from .scenario import add_service_principal

    sp = add_service_principal(state, tenant, spec, SP_MANAGED_IDENTITY)
    return {"app_id": sp.app_id, "object_id": sp.object_id}


def delete_directory_service_principal(state: State, tenant: str, app_id: str) -> dict:
    """Remove a foreign app's service principal or a managed identity from `tenant` (the foreign app then gets
    700016 there). Not Exchange's `remove_service_principal` (New-ServicePrincipal pointers)."""
    with state.lock:
        t = state.require_tenant(tenant)
        if t.service_principals.pop(app_id.lower(), None) is None:
            raise KeyError(f"no foreign or managed identity service principal {app_id} in {t.domain}")
    return {"deleted": app_id.lower()}


def add_federated_credential(state: State, app_id: str, **spec) -> dict:
    from .scenario import make_federated_credential

    with state.lock:
        app = state.require_app(app_id)
        f = make_federated_credential(spec)
        app.federated_credentials.append(f)
    return federated_json(f)


def remove_federated_credential(state: State, app_id: str, id: str) -> dict:  # noqa: A002 - the credential's id
    with state.lock:
        app = state.require_app(app_id)
        before = len(app.federated_credentials)
        app.federated_credentials = [f for f in app.federated_credentials if f.id != id]
        if len(app.federated_credentials) == before:
            raise KeyError(f"no federated credential {id} on {app_id}")
    return {"removed": id}


def set_sign_in_audience(state: State, app_id: str, sign_in_audience: str) -> dict:
    """AzureADMyOrg: the app's service principals in other tenants no longer sign in (700016)."""
    from .scenario import check_audience

    with state.lock:
        app = state.require_app(app_id)
        app.sign_in_audience = check_audience(sign_in_audience)
    return {"app_id": app.app_id, "sign_in_audience": app.sign_in_audience}


DIRECTORY_OPS = (add_page_fault, add_foreign_service_principal, add_managed_identity,
                 delete_directory_service_principal, add_federated_credential, remove_federated_credential,
                 set_sign_in_audience)


def _register() -> None:
    from .ops import OPS

    for fn in DIRECTORY_OPS:
        OPS[fn.__name__] = fn


_register()
