"""Entra ID endpoints: discovery, JWKS, token, authorize (auth code + PKCE), device code, logout."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import string
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from . import audit, grants, logs, pages
from .errors import AADError, aad_body, aad_response
from .grants import Issuer
from .state import App, AuthCode, DeviceCode, Tenant

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
NO_STORE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}
MFA_CODES = {50076, 50079, 50074}


async def read_form(request: Request) -> dict:
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def basic_auth(request: Request) -> tuple[str, str] | None:
    value = request.headers.get("authorization", "")
    if not value.lower().startswith("basic "):
        return None
    try:
        user, _, pw = base64.b64decode(value[6:]).decode().partition(":")
    except ValueError:
        return None
    from urllib.parse import unquote_plus
    return unquote_plus(user), unquote_plus(pw)


def _user_code() -> str:
    alphabet = string.ascii_uppercase.replace("O", "").replace("I", "") + "23456789"
    return "".join(secrets.choice(alphabet) for _ in range(9))


class Entra:
    def __init__(self, issuer: Issuer):
        self.issuer = issuer
        self.state = issuer.state
        self.base = issuer.base_url

    # -- helpers ---------------------------------------------------------------------------------
    def tenant(self, ident: str) -> Tenant:
        t = self.state.tenant(ident)
        if t is None:
            raise AADError(90002, tenant=ident)
        return t

    def app(self, tenant: Tenant, client_id: str | None) -> App:
        if not client_id:
            raise AADError(900144, param="client_id")
        # the tenant's own registration, or the service principal of another tenant's multitenant app (which
        # signs in with its home registration's credentials); else "not found in the directory"
        app = self.state.client_app(tenant, client_id)
        if app is None:
            raise AADError(700016, app_id=client_id, tenant=tenant.id)
        return app

    def token_urls(self, tenant: Tenant) -> set[str]:
        out = set()
        for t in (tenant.id, tenant.domain, tenant.domain.lower()):
            out |= {f"{self.base}/{t}/oauth2/v2.0/token", f"{self.base}/{t}/oauth2/token"}
        return out

    # -- discovery -------------------------------------------------------------------------------
    async def openid_configuration(self, request: Request) -> Response:
        ident = request.path_params["tenant"]
        t = self.state.tenant(ident)
        if t is None:
            body = aad_body(AADError(90002, tenant=ident), request.headers.get("client-request-id"))
            body["error"] = "invalid_tenant"
            return JSONResponse(body, status_code=400)
        base, host = f"{self.base}/{t.id}", urlsplit(self.base).netloc
        return JSONResponse({
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.base}/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
                                 "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time",
                                 "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash",
                                 "c_hash", "email"],
            "kerberos_endpoint": f"{base}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": host,
            "cloud_graph_host_name": host,
            "msgraph_host": host,
            "rbac_url": self.base,
        })

    async def keys(self, request: Request) -> Response:
        ident = request.path_params["tenant"]
        t = self.state.tenant(ident)
        if t is None:
            return aad_response(AADError(90002, tenant=ident))
        return JSONResponse(self.issuer.signer.jwks(f"{self.base}/{t.id}/v2.0"))

    # -- token -----------------------------------------------------------------------------------
    async def token(self, request: Request) -> Response:
        form = await read_form(request)
        basic = basic_auth(request)
        grant = form.get("grant_type", "")
        client_id = form.get("client_id") or (basic[0] if basic else "")
        self.state.count_token(grant, client_id)
        # every token request is a sign-in event (sandbox.logs); its correlationId is the client's
        # client-request-id, or one made up here and returned in the error body as Entra does
        kind = logs.SERVICE_PRINCIPAL if grant == "client_credentials" else logs.NON_INTERACTIVE
        ctx = logs.context(request.headers, request.client.host if request.client else None, kind)
        ctx.client_id, ctx.grant = client_id, grant
        corr = ctx.correlation_id
        busy = self._unavailable(request.path_params["tenant"], grant, client_id, form, corr, ctx)
        if busy is not None:
            return busy
        try:
            with self.state.lock:
                body = self._token(request.path_params["tenant"], grant, client_id, form, basic, ctx)
        except AADError as err:
            ctx.skip = ctx.skip or err.code == 70016  # a device-code poll still pending is not a sign-in
            logs.record(self.state, ctx, err)
            return aad_response(err, corr, trace_id=ctx.request_id)
        logs.record_success(self.state, ctx)
        return JSONResponse(body, headers=NO_STORE)

    def _unavailable(self, ident: str, grant: str, client_id: str, form: dict, corr: str | None,
                     ctx: logs.SignInContext) -> Response | None:
        """Answers that come before the request is looked at: an open incident on Entra ID, the throttling
        limits (M365_FACTS.md, "Throttling and transient replies"). Their bodies are not always JSON."""
        incident = self.state.incident("entra")
        if incident is not None:
            retry = {"Retry-After": str(incident.retry_after)}
            if incident.effect == "busy":
                return aad_response(AADError(90033), corr, retry)
            if incident.effect == "empty":
                return Response(b"", status_code=500, headers=retry)
            return HTMLResponse(pages.SERVICE_UNAVAILABLE, status_code=503, headers=retry)
        tenant = self.state.tenant(ident)
        if tenant is None:
            return None
        minute = dt.timedelta(minutes=1)
        per_app, per_tenant = tenant.token_requests_per_app_minute, tenant.token_requests_per_tenant_minute
        app_key = f"app:{tenant.id}:{(client_id or '').lower()}"
        if per_app is not None and self.state.count_in_window(app_key, minute) > per_app:
            oldest = self.state.oldest_in_window(app_key) or self.state.now()
            wait = max(1, int((oldest + minute - self.state.now()).total_seconds()) + 1)
            return PlainTextResponse("Too Many Requests", status_code=429, headers={"Retry-After": str(wait)})
        tenant_key = f"tenant:{tenant.id}"
        refused = None
        if per_tenant is not None and self.state.count_in_window(tenant_key, minute) > per_tenant:
            refused, extra = AADError(90055), {"Retry-After": "60"}
        limit = tenant.identical_requests_limit
        if refused is None and limit is not None:
            same = "|".join((tenant.id, (client_id or "").lower(), grant, form.get("scope") or "",
                             form.get("refresh_token") or form.get("assertion") or ""))
            if self.state.count_in_window(f"same:{same}", dt.timedelta(minutes=5)) > limit:
                refused, extra = AADError(50196), {}
        if refused is None:
            return None
        with self.state.lock:  # an AADSTS refusal is logged like any other (the plain 429 and 5xx are not)
            ctx.tenant, ctx.app = tenant, self.state.client_app(tenant, client_id or "")
            logs.describe(self.state, ctx, tenant, grant, form)
        logs.record(self.state, ctx, refused)
        return aad_response(refused, corr, extra, trace_id=ctx.request_id)

    def _token(self, ident: str, grant: str, client_id: str, form: dict, basic, ctx: logs.SignInContext) -> dict:
        tenant = self.tenant(ident)
        ctx.tenant = tenant
        logs.describe(self.state, ctx, tenant, grant, form)
        if not grant:
            raise AADError(900144, param="grant_type")
        app = self.app(tenant, client_id)
        ctx.app = app
        if not app.enabled:
            raise AADError(7000112, app_id=app.app_id, app_name=app.display_name)
        urls = self.token_urls(tenant)
        if grant == "client_credentials":
            acr = grants.authenticate_client(self.state, tenant, app, form, basic, urls, allow_public=False, ctx=ctx)
            if not form.get("scope"):
                raise AADError(900144, param="scope")
            return self.issuer.app_only(app, grants.parse_scopes(form["scope"], tenant), acr)
        redeem = {"refresh_token": grants.redeem_refresh_token, "authorization_code": grants.redeem_auth_code,
                  DEVICE_GRANT: grants.redeem_device_code}.get(grant)
        if redeem is None:
            raise AADError(70003, grant=grant)
        acr = grants.authenticate_client(self.state, tenant, app, form, basic, urls, allow_public=True, ctx=ctx)
        return redeem(self.state, self.issuer, tenant, app, form, acr)

    # -- authorize -------------------------------------------------------------------------------
    async def authorize(self, request: Request) -> Response:
        params = dict(request.query_params) if request.method == "GET" else await read_form(request)
        ident = request.path_params["tenant"]
        with self.state.lock:
            try:
                tenant = self.tenant(ident)
                app = self.app(tenant, params.get("client_id"))
            except AADError as err:
                return pages.error_page(err.text)
            redirect_uri = params.get("redirect_uri") or ""
            if redirect_uri not in app.redirect_uris:
                return pages.error_page(AADError(50011, redirect_uri=redirect_uri, app_id=app.app_id).text)
            try:
                return self._authorize(request, tenant, app, params, redirect_uri)
            except AADError as err:
                # the ids of the sign-in event when one was logged, so the redirect's text names the logged request
                corr, trace = getattr(err, "log_ids", (request.headers.get("client-request-id"), None))
                return self._redirect_error(redirect_uri, err, params.get("state"), corr, params.get("response_mode"),
                                            trace)

    def _interactive(self, request: Request, tenant: Tenant, app: App, login: str,
                     resource: str | None) -> logs.SignInContext:
        """The context of a sign-in on a page: the browser sends no client-request-id, so Entra makes one up."""
        ctx = logs.context(request.headers, request.client.host if request.client else None, logs.INTERACTIVE)
        ctx.tenant, ctx.app, ctx.upn, ctx.resource, ctx.client_app = tenant, app, login, resource, logs.BROWSER
        return ctx

    def _redirect_error(self, redirect_uri: str, err: AADError, state: str | None, corr: str | None,
                        mode: str | None, trace: str | None = None):
        error = err.error
        if err.code in MFA_CODES:
            error = "interaction_required"
        elif error == "invalid_grant":
            error = "access_denied"
        body = aad_body(err, corr, trace)
        query = {"error": error, "error_description": body["error_description"], "error_uri": body["error_uri"]}
        if state is not None:
            query["state"] = state
        return _respond(redirect_uri, query, mode)

    def _authorize(self, request: Request, tenant: Tenant, app: App, params: dict, redirect_uri: str):
        if not app.enabled:
            raise AADError(7000112, app_id=app.app_id, app_name=app.display_name)
        if params.get("response_type") != "code":
            raise AADError(70005, response_type=params.get("response_type") or "")
        req = grants.parse_scopes(params.get("scope") or "openid profile", tenant)
        action = str(request.url.path)
        hint_user = tenant.users.get((params.get("login_hint") or "").lower())
        to_consent = sorted(req.perms - (app.consented_scopes(hint_user.upn, req.resource) if hint_user
                                         else set(app.delegated_permissions.get(req.resource, set()))))
        if request.method == "GET":
            return pages.sign_in(action, params, app.display_name, consent_for=to_consent)
        if params.get("cancel"):  # the user cancelled on the sign-in page, as Entra reports it
            err = AADError(65004)
            body = aad_body(err, request.headers.get("client-request-id"))
            query = {"error": "access_denied", "error_subcode": "cancel",
                     "error_description": body["error_description"], "error_uri": body["error_uri"]}
            if params.get("state") is not None:
                query["state"] = params["state"]
            return _respond(redirect_uri, query, params.get("response_mode"))
        login = (params.get("login") or "").strip()
        user = tenant.users.get(login.lower())
        ctx = self._interactive(request, tenant, app, login, req.resource)
        if user is None:
            err = AADError(50034, upn=login, tenant=tenant.domain)
            logs.record(self.state, ctx, err)
            return pages.sign_in(action, params, app.display_name, error=err.text, consent_for=to_consent)
        if params.get("passwd") != user.password:
            logs.record(self.state, ctx, AADError(50126))
            return pages.sign_in(action, params, app.display_name, error=AADError(50126).text,
                                 consent_for=to_consent)
        mfa = user.mfa == "required" and bool(params.get("mfa_code")) and params["mfa_code"] == user.mfa_code
        ctx.mfa = mfa
        try:
            grants.check_user(self.state, app, user, req, mfa, None, frequency=False, interactive=True)
            missing = grants.missing_consent(app, user, req)
            if missing:
                if not tenant.user_consent:
                    raise AADError(90094)
                if params.get("consent") != "accept":
                    if "consent" in params or to_consent:
                        raise AADError(65004)
                    return pages.sign_in(action, params, app.display_name, consent_for=sorted(missing))
                grants.grant_user_consent(app, user, req)
                audit.consent(self.state, app, req.resource, sorted(missing), user.upn, admin=False, app_only=False,
                              upn=user.upn)
        except AADError as err:
            logs.record(self.state, ctx, err)
            err.log_ids = (ctx.correlation_id, ctx.request_id)
            raise
        logs.record(self.state, ctx)
        now = self.state.now()
        code = AuthCode(code="1.Acode" + secrets.token_urlsafe(48), tenant_id=tenant.id, client_id=app.app_id,
                        upn=user.upn.lower(), redirect_uri=redirect_uri, scopes=list(req.raw),
                        code_challenge=params.get("code_challenge"),
                        code_challenge_method=params.get("code_challenge_method"), nonce=params.get("nonce"),
                        auth_time=now, expires_at=now + dt.timedelta(minutes=10), mfa=mfa)
        self.state.auth_codes[code.code] = code
        query = {"code": code.code}
        if params.get("state") is not None:
            query["state"] = params["state"]
        query["session_state"] = str(secrets.token_hex(16))
        return _respond(redirect_uri, query, params.get("response_mode"))

    # -- device code -----------------------------------------------------------------------------
    async def devicecode(self, request: Request) -> Response:
        form = await read_form(request)
        try:
            with self.state.lock:
                tenant = self.tenant(request.path_params["tenant"])
                app = self.app(tenant, form.get("client_id"))
                if not app.enabled:
                    raise AADError(7000112, app_id=app.app_id, app_name=app.display_name)
                if not app.public_client:  # "Allow public client flows" is off
                    raise AADError(7000218)
                grants.parse_scopes(form.get("scope") or "", tenant)
                dc = DeviceCode(device_code="DAQABAAEAAA" + secrets.token_urlsafe(64), user_code=_user_code(),
                                tenant_id=tenant.id, client_id=app.app_id,
                                scopes=(form.get("scope") or "").split(),
                                expires_at=self.state.now() + dt.timedelta(minutes=15),
                                interval=self.state.device_code_interval_s)
                self.state.device_codes[dc.device_code] = dc
        except AADError as err:
            return aad_response(err, request.headers.get("client-request-id"))
        uri = f"{self.base}/devicelogin"
        return JSONResponse({
            "user_code": dc.user_code, "device_code": dc.device_code, "verification_uri": uri,
            "expires_in": 900, "interval": dc.interval,
            "message": f"To sign in, use a web browser to open the page {uri} and enter the code "
                       f"{dc.user_code} to authenticate.",
        }, headers=NO_STORE)

    async def devicelogin(self, request: Request) -> Response:
        action = "/devicelogin"
        if request.method == "GET":
            return pages.device_login(action, user_code=request.query_params.get("otc", ""))
        form = await read_form(request)
        with self.state.lock:
            dc = self.state.find_device_code(form.get("otc", ""))
            if dc is None or dc.redeemed:
                return pages.device_login(action, error="That code didn't work. Check the code and try again.")
            if self.state.now() >= dc.expires_at:
                return pages.device_login(action, error=AADError(70019).text)
            tenant = self.state.tenant(dc.tenant_id)
            app = self.state.client_app(tenant, dc.client_id) if tenant else None
            login = (form.get("login") or "").strip()
            user = tenant.users.get(login.lower()) if tenant else None
            ctx = self._interactive(request, tenant, app, login, None) if tenant else None
            if ctx is not None:
                ctx.protocol = "deviceCode"
                try:
                    ctx.resource = grants.parse_scopes(dc.scopes, tenant).resource
                except AADError:
                    pass
            if app is None or user is None or form.get("passwd") != user.password:
                err = AADError(50126) if user is not None else AADError(50034, upn=login, tenant=tenant.domain)
                if ctx is not None:
                    logs.record(self.state, ctx, err)
                return pages.device_login(action, error=AADError(50126).text, user_code=dc.user_code)
            if user.password_expired:  # an interactive sign-in: the password must be changed first
                logs.record(self.state, ctx, AADError(50055))
                return pages.device_login(action, error=AADError(50055).text, user_code=dc.user_code)
            mfa = user.mfa == "required" and form.get("mfa_code") == user.mfa_code
            ctx.mfa = mfa
            grants.approve_device(self.state, tenant, app, dc, user, mfa)
            logs.record(self.state, ctx)
        return pages.device_login(action, done=f"You have signed in to the {app.display_name} application "
                                  "on your device. You may now close this window.")

    async def logout(self, request: Request) -> Response:
        target = request.query_params.get("post_logout_redirect_uri")
        if target:
            return RedirectResponse(target, status_code=302)
        return pages.device_login("", done="You signed out of your account.")

    def routes(self) -> list[Route]:
        return [
            Route("/devicelogin", self.devicelogin, methods=["GET", "POST"]),
            Route("/{tenant}/v2.0/.well-known/openid-configuration", self.openid_configuration),
            Route("/{tenant}/discovery/v2.0/keys", self.keys),
            Route("/{tenant}/discovery/keys", self.keys),
            Route("/{tenant}/oauth2/v2.0/token", self.token, methods=["POST"]),
            Route("/{tenant}/oauth2/v2.0/authorize", self.authorize, methods=["GET", "POST"]),
            Route("/{tenant}/oauth2/v2.0/devicecode", self.devicecode, methods=["POST"]),
            Route("/{tenant}/oauth2/v2.0/logout", self.logout, methods=["GET", "POST"]),
        ]


def _with_query(url: str, extra: dict) -> str:
    parts = urlsplit(url)
    query = parts.query + ("&" if parts.query else "") + urlencode(extra)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _respond(redirect_uri: str, fields: dict, response_mode: str | None) -> Response:
    """302 with a query (the default) or, for response_mode=form_post, a self-posting form."""
    if response_mode == "form_post":
        return pages.form_post(redirect_uri, fields)
    return RedirectResponse(_with_query(redirect_uri, fields), status_code=302)
