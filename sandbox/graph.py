"""Microsoft Graph v1.0: bearer validation and `applications`; mail endpoints in `mail.graph_mail`, directory
listings (applications, servicePrincipals, grants ...) in `directory`."""

from __future__ import annotations

import re

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import passwords
from .directory import Directory, application_json, graph_time  # noqa: F401 - graph_time: the shared date format
from .errors import graph_error
from .grants import Issuer
from .mail.graph_mail import GraphMail
from .reports import Reports
from .state import Tenant
from .tokens import GRAPH_AUDIENCES, sts_issuer

READ_APPS = {"Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All",
             "Directory.ReadWrite.All"}
_BY_APP_ID = re.compile(r"^applications\(appId='([^']*)'\)$", re.I)
_BY_ID = re.compile(r"^applications/([^/]+)$", re.I)
_USER = re.compile(r"^users/([^/]+)$", re.I)
READ_USERS = {"User.Read.All", "User.ReadBasic.All", "Directory.Read.All", "Directory.ReadWrite.All",
              "User.ReadWrite.All"}
WWW_AUTH = ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
            'client_id="00000003-0000-0000-c000-000000000000"')


class AuthFailure(Exception):
    def __init__(self, response: Response):
        self.response = response


class Graph:
    def __init__(self, issuer: Issuer):
        self.issuer = issuer
        self.state = issuer.state
        self.base = issuer.base_url + "/v1.0"
        self.mail = GraphMail(self.state, self.base)
        self.reports = Reports(self.state, issuer.base_url)
        self.directory = Directory(self.state, self.base)

    def authenticate(self, request: Request) -> tuple[dict, Tenant]:
        crid = request.headers.get("client-request-id")

        def fail(message: str) -> AuthFailure:
            return AuthFailure(graph_error(401, "InvalidAuthenticationToken", message, crid,
                                           {"WWW-Authenticate": WWW_AUTH}))

        value = request.headers.get("authorization", "")
        if not value.lower().startswith("bearer ") or not value[7:].strip():
            raise fail("Access token is empty.")
        try:
            claims = self.issuer.signer.verify(value[7:].strip())
        except jwt.ExpiredSignatureError as exc:
            raise fail("Lifetime validation failed, the token is expired.") from exc
        except jwt.ImmatureSignatureError as exc:
            raise fail("Lifetime validation failed, the token is not yet valid.") from exc
        except jwt.InvalidSignatureError as exc:
            raise fail("Access token validation failure. Signature validation failed.") from exc
        except jwt.PyJWTError as exc:
            raise fail("IDX14100: JWT is not well formed.") from exc
        if claims.get("aud") not in GRAPH_AUDIENCES:
            raise fail("Access token validation failure. Invalid audience.")
        tenant = self.state.tenant(claims.get("tid", ""))
        if tenant is None or claims.get("iss") != sts_issuer(tenant.id):
            raise fail("Access token validation failure. Invalid issuer.")
        return claims, tenant

    async def dispatch(self, request: Request) -> Response:
        crid = request.headers.get("client-request-id")
        try:
            claims, tenant = self.authenticate(request)
        except AuthFailure as failure:
            return failure.response
        rest = request.path_params["rest"]
        answer = await self.reports.dispatch(request, claims, tenant, rest, "v1.0")
        if answer is not None:
            return answer
        # tenant-wide directory reads (discovery): applications, servicePrincipals, grants, owners, users
        answer = await self.directory.dispatch(request, claims, tenant, rest)
        if answer is not None:
            return answer
        if rest.lower().startswith(("users/", "me/")):
            answer = await self.mail.dispatch(request, claims, tenant, rest)
            if answer is not None:
                return answer
        answer = await passwords.handle(request, claims, tenant, self.state, rest, self.base)
        if answer is not None:
            return answer
        if request.method == "GET" and _USER.match(rest):
            return self.get_user(request, claims, tenant, _USER.match(rest).group(1))
        if request.method == "GET":
            m = _BY_APP_ID.match(rest) or _BY_ID.match(rest)
            if m:
                return self.get_application(request, claims, tenant, m.group(1), by_app_id=m.re is _BY_APP_ID)
        segment = rest.split("/")[0]
        return graph_error(400, "BadRequest", f"Resource not found for the segment '{segment}'.", crid)

    def get_application(self, request: Request, claims: dict, tenant: Tenant, ident: str,
                        by_app_id: bool) -> Response:
        crid = request.headers.get("client-request-id")
        granted = set(claims.get("roles") or []) | set((claims.get("scp") or "").split())
        owned_by = passwords.OWNED_BY in granted and "roles" in claims
        if not granted & READ_APPS and not owned_by:
            return graph_error(403, "Authorization_RequestDenied",
                               "Insufficient privileges to complete the operation.", crid)
        with self.state.lock:
            if by_app_id:
                app = tenant.apps.get(ident.lower())
            else:
                app = next((a for a in tenant.apps.values() if a.object_id == ident), None)
            if app is not None and not granted & READ_APPS and (claims.get("appid") or "").lower() not in app.owners:
                return graph_error(403, "Authorization_RequestDenied",
                                   "Insufficient privileges to complete the operation.", crid)
            if app is None:
                return graph_error(404, "Request_ResourceNotFound",
                                   f"Resource '{ident}' does not exist or one of its queried "
                                   "reference-property objects are not present.", crid)
            body = application_json(app, tenant)
        select = [s.strip() for s in (request.query_params.get("$select") or "").split(",") if s.strip()]
        context = f"{self.base}/$metadata#applications/$entity"
        if select:
            by_lower = {k.lower(): k for k in body}
            unknown = [s for s in select if s.lower() not in by_lower]
            if unknown:
                return graph_error(400, "Request_BadRequest", f"Could not find a property named "
                                   f"'{unknown[0]}' on type 'microsoft.graph.application'.", crid)
            names = [by_lower[s.lower()] for s in select]
            body = {k: body[k] for k in names}
            context = f"{self.base}/$metadata#applications({','.join(names)})/$entity"
        out = {"@odata.context": context}
        out.update(body)
        headers = {"request-id": crid or "", "client-request-id": crid or "",
                   "OData-Version": "4.0"}
        return JSONResponse(out, headers={k: v for k, v in headers.items() if v})

    def get_user(self, request: Request, claims: dict, tenant: Tenant, ident: str) -> Response:
        """GET /users/{id | userPrincipalName}: what Entra says about an account (mail and proxyAddresses need
        User.Read.All or Directory.Read.All; a delegated token may read its own user)."""
        crid = request.headers.get("client-request-id")
        granted = set(claims.get("roles") or []) | set((claims.get("scp") or "").split())
        with self.state.lock:
            user = tenant.users.get(ident.lower()) or next(
                (u for u in tenant.users.values() if u.oid.lower() == ident.lower()), None)
            own = user is not None and "scp" in claims and claims.get("oid") == user.oid
            if not granted & READ_USERS and not own:
                return graph_error(403, "Authorization_RequestDenied",
                                   "Insufficient privileges to complete the operation.", crid)
            if user is None:
                return graph_error(404, "Request_ResourceNotFound", f"Resource '{ident}' does not exist or one of "
                                   "its queried reference-property objects are not present.", crid)
            body = {"id": user.oid, "userPrincipalName": user.upn, "displayName": user.display_name or user.upn,
                    "mail": user.address, "proxyAddresses": list(user.proxy_addresses) or [f"SMTP:{user.address}"],
                    "accountEnabled": user.enabled}
        select = [x.strip() for x in (request.query_params.get("$select") or "").split(",") if x.strip()]
        if select:
            by_lower = {k.lower(): k for k in body}
            unknown = [x for x in select if x.lower() not in by_lower]
            if unknown:
                return graph_error(400, "Request_BadRequest", f"Could not find a property named '{unknown[0]}' "
                                   "on type 'microsoft.graph.user'.", crid)
            body = {by_lower[x.lower()]: body[by_lower[x.lower()]] for x in select}
        return JSONResponse({"@odata.context": f"{self.base}/$metadata#users/$entity", **body},
                            headers={"OData-Version": "4.0", **({"client-request-id": crid} if crid else {})})

    async def dispatch_beta(self, request: Request) -> Response:
        """`/beta`: the audit logs, the usage reports and service health (sandbox.reports); nothing else."""
        try:
            claims, tenant = self.authenticate(request)
        except AuthFailure as failure:
            return failure.response
        rest = request.path_params["rest"]
        answer = await self.reports.dispatch(request, claims, tenant, rest, "beta")
        if answer is not None:
            return answer
        return graph_error(400, "BadRequest", f"Resource not found for the segment '{rest.split('/')[0]}'.",
                           request.headers.get("client-request-id"))

    def routes(self) -> list[Route]:
        return [Route("/v1.0/{rest:path}", self.dispatch, methods=["GET", "POST", "PATCH", "DELETE"]),
                Route("/beta/{rest:path}", self.dispatch_beta, methods=["GET", "POST", "PATCH", "DELETE"])]
