"""The HTML a browser sees: sign-in (with consent), device login, error pages. Plain forms, no script."""

from __future__ import annotations

from html import escape

from starlette.responses import HTMLResponse

_STYLE = "body{font-family:sans-serif;max-width:32em;margin:3em auto}label{display:block;margin:.6em 0}"


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>")
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def _hidden(params: dict) -> str:
    return "".join(f"<input type='hidden' name='{escape(k)}' value='{escape(v)}'>"
                   for k, v in params.items() if k not in {"login", "passwd", "mfa_code", "consent", "cancel"})


def sign_in(action: str, params: dict, app_name: str, error: str | None = None,
            consent_for: list[str] | None = None) -> HTMLResponse:
    hint = params.get("login_hint", "")
    err = f"<p id='error' class='error' role='alert'>{escape(error)}</p>" if error else ""
    consent = ""
    if consent_for:
        items = "".join(f"<li>{escape(s)}</li>" for s in consent_for)
        consent = (f"<fieldset id='consent'><legend>Permissions requested by {escape(app_name)}</legend>"
                   f"<ul>{items}</ul><label><input type='checkbox' name='consent' value='accept' checked>"
                   "Accept</label></fieldset>")
    body = (f"<p>Sign in to continue to <b>{escape(app_name)}</b></p>{err}"
            f"<form id='signin' method='post' action='{escape(action)}'>{_hidden(params)}"
            f"<label>Email <input name='login' type='email' value='{escape(hint)}'></label>"
            "<label>Password <input name='passwd' type='password'></label>"
            "<label>Verification code (when MFA is required) <input name='mfa_code'></label>"
            f"{consent}<button type='submit'>Sign in</button></form>"
            # Entra's "Cancel" / "Back": the app is sent error=access_denied, error_subcode=cancel
            f"<form id='cancel' method='post' action='{escape(action)}'>{_hidden(params)}"
            "<input type='hidden' name='cancel' value='1'><button type='submit'>Cancel</button></form>")
    return _page("Sign in to your account", body)


def error_page(text: str, status: int = 400) -> HTMLResponse:
    return _page("Sorry, but we're having trouble signing you in.",
                 f"<p id='error' class='error' role='alert'>{escape(text)}</p>", status)


def device_login(action: str, error: str | None = None, done: str | None = None,
                 user_code: str = "") -> HTMLResponse:
    if done:
        return _page("Device sign-in", f"<p id='done'>{escape(done)}</p>")
    err = f"<p id='error' class='error' role='alert'>{escape(error)}</p>" if error else ""
    body = (f"{err}<form id='devicelogin' method='post' action='{escape(action)}'>"
            f"<label>Code <input name='otc' value='{escape(user_code)}'></label>"
            "<label>Email <input name='login' type='email'></label>"
            "<label>Password <input name='passwd' type='password'></label>"
            "<label>Verification code (when MFA is required) <input name='mfa_code'></label>"
            "<button type='submit'>Next</button></form>")
    return _page("Enter code", body)


def form_post(action: str, fields: dict) -> HTMLResponse:
    inputs = "".join(f"<input type='hidden' name='{escape(k)}' value='{escape(v)}'>" for k, v in fields.items())
    html = (f"<!doctype html><html><head><title>Working...</title></head><body onload='document.forms[0].submit()'>"
            f"<form id='form_post' method='post' action='{escape(action)}'>{inputs}"
            "<noscript><button type='submit'>Continue</button></noscript></form></body></html>")
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


# What login.microsoftonline.com serves during an incident instead of a token reply: an HTML page, not JSON
# (M365_FACTS.md, "Throttling and transient replies"). MSAL cannot parse it; a client must go by the status.
SERVICE_UNAVAILABLE = (
    "<!DOCTYPE html><html><head><title>Service Unavailable</title></head><body>"
    "<h2>Service Unavailable</h2><hr><p>HTTP Error 503. The service is unavailable.</p></body></html>"
)
