"""Microsoft's error shapes: Entra ID (AADSTS) token/authorize errors and Graph errors.

Each AADSTS entry: (error, HTTP status, suberror or None, description template). Texts follow
Microsoft's as published / observed; consumers must key on `error_codes`, never on the text.
"""

from __future__ import annotations

import datetime as dt
import uuid

from starlette.responses import JSONResponse

AADSTS: dict[int, tuple[str, int, str | None, str]] = {
    # tenant / app / client authentication
    90002: ("invalid_request", 400, None,
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing "
            "into the correct cloud. Check with your subscription administrator, this may happen if there "
            "are no active subscriptions for the tenant."),
    700016: ("unauthorized_client", 400, None,
             "Application with identifier '{app_id}' was not found in the directory '{tenant}'. This can "
             "happen if the application has not been installed by the administrator of the tenant or "
             "consented to by any user in the tenant. You may have sent your authentication request to "
             "the wrong tenant."),
    7000112: ("unauthorized_client", 400, None, "Application '{app_id}'({app_name}) is disabled."),
    7000215: ("invalid_client", 401, None,
              "Invalid client secret provided. Ensure the secret being sent in the request is the client "
              "secret value, not the client secret ID, for a secret added to app '{app_id}'."),
    7000222: ("invalid_client", 401, None,
              "The provided client secret keys for app '{app_id}' are expired. Visit the Azure portal to "
              "create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate "
              "credentials for added security: https://aka.ms/certCreds."),
    7000218: ("invalid_client", 401, None,
              "The request body must contain the following parameter: 'client_assertion' or "
              "'client_secret'."),
    700027: ("invalid_client", 401, None, "{reason}"),
    700024: ("invalid_client", 401, None,
             "Client assertion is not within its valid time range. Current time: {now}, assertion valid "
             "from {nbf}, expiry time of assertion {exp}. Review the documentation at "
             "https://learn.microsoft.com/entra/identity-platform/certificate-credentials ."),
    700021: ("invalid_client", 401, None,
             "Client assertion application identifier doesn't match 'client_id' parameter. Review the "
             "documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials ."),
    50012: ("invalid_client", 401, None, "{reason}"),
    700025: ("invalid_client", 401, None,
             "Client is public so neither 'client_assertion' nor 'client_secret' should be presented."),
    # grants
    70008: ("invalid_grant", 400, "bad_token",
            "The provided authorization code or refresh token has expired due to inactivity. Send a new "
            "interactive authorization request for this user and resource."),
    700082: ("invalid_grant", 400, "bad_token",
             "The refresh token has expired due to inactivity. The token was issued on {issued} and was "
             "inactive for {inactive}."),
    50173: ("invalid_grant", 400, "bad_token",
            "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user "
            "might have changed or reset their password. The grant was issued on '{issued}' and the "
            "TokensValidFrom date (before which tokens are not valid) for this user is '{valid_from}'."),
    70043: ("invalid_grant", 400, "bad_token",
            "The refresh token has expired or is invalid due to sign-in frequency checks by conditional "
            "access. The token was issued on {issued} and the maximum allowed lifetime for this request "
            "is {max_age}."),
    65001: ("invalid_grant", 400, "consent_required",
            "The user or administrator has not consented to use the application with ID '{app_id}' named "
            "'{app_name}'. Send an interactive authorization request for this user and resource."),
    90094: ("invalid_grant", 400, "consent_required", "The grant requires admin permission."),
    50057: ("invalid_grant", 400, None, "The user account is disabled."),
    50055: ("invalid_grant", 400, "user_password_expired", "The password is expired."),
    50053: ("invalid_grant", 400, None,
            "The account is locked, you've tried to sign in too many times with an incorrect user ID or "
            "password."),
    53003: ("invalid_grant", 400, "message_only",
            "Access has been blocked by Conditional Access policies. The access policy does not allow "
            "token issuance."),
    50076: ("invalid_grant", 400, "basic_action",
            "Due to a configuration change made by your administrator, or because you moved to a new "
            "location, you must use multi-factor authentication to access '{resource}'."),
    50079: ("invalid_grant", 400, "basic_action",
            "Due to a configuration change made by your administrator, or because you moved to a new "
            "location, you must enroll in multi-factor authentication to access '{resource}'."),
    50074: ("invalid_grant", 400, "basic_action", "Strong Authentication is required."),
    50105: ("invalid_grant", 400, None,
            "Your administrator has configured the application {app_name} ('{app_id}') to block users "
            "unless they are specifically granted ('assigned') access to the application. The signed in "
            "user '{upn}' is blocked because they are not a direct member of a group with access, nor had "
            "access directly assigned by an administrator. Please contact your administrator to assign "
            "access to this application."),
    50078: ("interaction_required", 400, "basic_action",
            "Presented multi-factor authentication has expired due to policies configured by your "
            "administrator, you must refresh your multi-factor authentication to access '{resource}'."),
    530035: ("invalid_grant", 400, None,
             "Access has been blocked by security defaults. This is due to the request using legacy auth or "
             "being deemed unsafe by security defaults policies. For more information, visit "
             "https://aka.ms/security-defaults"),
    500112: ("invalid_grant", 400, None,
             "The reply address '{redirect_uri}' does not match the reply address '{expected}' provided when "
             "requesting Authorization code."),
    # throttling and service health (M365_FACTS.md, "Throttling and transient replies")
    50196: ("invalid_grant", 400, None,
            "The server terminated an operation because it encountered a client request loop. Please contact "
            "your app vendor."),
    90055: ("temporarily_unavailable", 429, None,
            "The server is temporarily unable to handle the request: too many incoming requests for this "
            "tenant. Retry the request later."),
    90033: ("temporarily_unavailable", 503, None,
            "A transient error has occurred. Please try again."),
    50126: ("invalid_grant", 400, None, "Error validating credentials due to invalid username or password."),
    # interrupts seen in sign-in logs; the sandbox's flows do not produce them (the record_signin op does).
    # Texts as quoted in SharePoint/sp-dev-docs#2685 and MicrosoftDocs/azure-docs#9033
    50058: ("interaction_required", 400, None, "A silent sign-in request was sent but no user is signed in."),
    50140: ("interaction_required", 400, None,
            "This error occurred due to 'Keep me signed in' interrupt when the user was signing-in."),
    50034: ("invalid_grant", 400, None,
            "The user account {upn} does not exist in the {tenant} directory. To sign into this "
            "application, the account must be added to the directory."),
    9002313: ("invalid_grant", 400, None, "Invalid request. Request is malformed or invalid."),
    70000: ("invalid_grant", 400, None, "The provided value for the 'code' parameter is not valid."),
    54005: ("invalid_grant", 400, None,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an "
            "existing refresh token."),
    501481: ("invalid_grant", 400, None,
             "The Code_Verifier does not match the code_challenge supplied in the authorization request."),
    50148: ("invalid_grant", 400, None,
            "The code_verifier does not match the code_challenge supplied in the authorization request "
            "for PKCE."),
    50011: ("invalid_request", 400, None,
            "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs "
            "configured for the application '{app_id}'. Make sure the redirect URI sent in the request "
            "matches one added to your application in the Azure portal. Navigate to "
            "https://aka.ms/redirectUriMismatchError to learn more about how to fix this."),
    70005: ("unsupported_response_type", 400, None,
            "response_type '{response_type}' is not enabled for the application."),
    65004: ("access_denied", 400, None, "User declined to consent to access the app."),
    70016: ("authorization_pending", 400, None,
            "OAuth 2.0 device flow error. Authorization is pending. Continue polling."),
    70019: ("expired_token", 400, None, "Verification code expired."),
    # request shape
    900144: ("invalid_request", 400, None, "The request body must contain the following parameter: '{param}'."),
    70003: ("unsupported_grant_type", 400, None, "The app requested an unsupported grant type '{grant}'."),
    70011: ("invalid_scope", 400, None,
            "The provided request must include a 'scope' input parameter. The provided value for the input "
            "parameter 'scope' is not valid. The scope {scope} is not valid."),
    1002012: ("invalid_scope", 400, None,
              "The provided value for scope {scope} is not valid. Client credential flows must have a scope "
              "value with /.default suffixed to the resource identifier (application ID URI)."),
    28000: ("invalid_scope", 400, None,
            "Provided value for the input parameter scope is not valid because it contains more than one "
            "resource. Scope {scope} is not valid."),
    500011: ("invalid_resource", 400, None,
             "The resource principal named {resource} was not found in the tenant named {tenant}. This can "
             "happen if the application has not been installed by the administrator of the tenant or "
             "consented to by any user in the tenant. You might have sent your authentication request to "
             "the wrong tenant."),
}


class AADError(Exception):
    """Raised anywhere in grant processing; rendered in Microsoft's shape by `aad_response`."""

    def __init__(self, code: int, **fmt: str):
        self.code = code
        self.fmt = fmt
        error, self.status, self.suberror, template = AADSTS[code]
        self.error = error
        try:
            text = template.format(**fmt)
        except KeyError:
            text = template
        self.text = f"AADSTS{code}: {text}"
        super().__init__(self.text)


def ms_timestamp(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M:%SZ")


def aad_body(err: AADError, correlation_id: str | None = None, trace_id: str | None = None) -> dict:
    """`trace_id`: the request's id, which is also the id of its sign-in log event."""
    trace_id, corr = trace_id or str(uuid.uuid4()), correlation_id or str(uuid.uuid4())
    ts = ms_timestamp()
    body = {
        "error": err.error,
        "error_description": f"{err.text}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {corr}\r\nTimestamp: {ts}",
        "error_codes": [err.code],
        "timestamp": ts,
        "trace_id": trace_id,
        "correlation_id": corr,
        "error_uri": f"https://login.microsoftonline.com/error?code={err.code}",
    }
    if err.suberror:
        body["suberror"] = err.suberror
    return body


def aad_response(err: AADError, correlation_id: str | None = None, extra: dict | None = None,
                 trace_id: str | None = None) -> JSONResponse:
    headers = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache", **(extra or {})}
    return JSONResponse(aad_body(err, correlation_id, trace_id), status_code=err.status, headers=headers)


def graph_error(status: int, code: str, message: str, client_request_id: str | None = None,
                headers: dict | None = None) -> JSONResponse:
    request_id = str(uuid.uuid4())
    crid = client_request_id or request_id
    body = {"error": {"code": code, "message": message, "innerError": {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": request_id, "client-request-id": crid,
    }}}
    h = {"request-id": request_id, "client-request-id": crid}
    h.update(headers or {})
    return JSONResponse(body, status_code=status, headers=h)
