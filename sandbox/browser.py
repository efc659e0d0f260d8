"""The user's browser: follow an authorize URL, fill the sign-in form, return where it redirects."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode, urljoin

import requests


class SignInError(RuntimeError):
    """The sign-in page answered with an error instead of redirecting (no redirect_uri to go to)."""

    def __init__(self, text: str):
        super().__init__(text)
        m = re.search(r"AADSTS(\d+)", text)
        self.code = int(m.group(1)) if m else None


class _Form(HTMLParser):
    def __init__(self, form_id: str):
        super().__init__()
        self.form_id, self.in_form, self.action = form_id, False, None
        self.fields: dict[str, str] = {}
        self.checkboxes: dict[str, str] = {}
        self.error, self._in_error, self.done = None, False, None
        self._in_done = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and a.get("id") == self.form_id:
            self.in_form, self.action = True, a.get("action")
        elif tag == "input" and self.in_form and a.get("name"):
            if a.get("type") == "checkbox":
                self.checkboxes[a["name"]] = a.get("value", "on")
            else:
                self.fields[a["name"]] = a.get("value", "")
        elif a.get("id") == "error":
            self._in_error = True
        elif a.get("id") == "done":
            self._in_done = True

    def handle_endtag(self, tag):
        if tag == "form":
            self.in_form = False
        if tag == "p":
            self._in_error = self._in_done = False

    def handle_data(self, data):
        if self._in_error:
            self.error = (self.error or "") + data
        if self._in_done:
            self.done = (self.done or "") + data


def _session(ca_path) -> requests.Session:
    s = requests.Session()
    s.verify = str(ca_path)
    s.trust_env = False
    return s


def sign_in(authorize_url: str, username: str, password: str, ca_path: str | Path,
            mfa_code: str | None = None, consent: bool = True) -> str:
    """Returns the URL the sandbox redirected to: `redirect_uri?code=...&state=...` or `?error=...`.

    Raises SignInError when the page shows an error without redirecting (bad password, unknown
    user, unregistered redirect_uri, unknown app or tenant).
    """
    with _session(ca_path) as s:
        r = s.get(authorize_url, allow_redirects=False, timeout=10)
        for _ in range(3):
            if r.is_redirect:
                return r.headers["Location"]
            posted = _Form("form_post")
            posted.feed(r.text)
            if posted.action is not None:  # response_mode=form_post: what the browser would POST
                sep = "&" if "?" in posted.action else "?"
                return posted.action + sep + urlencode(posted.fields)
            page = _Form("signin")
            page.feed(r.text)
            if page.action is None or (page.error and r.request.method == "POST"):
                raise SignInError(page.error or f"no sign-in form (HTTP {r.status_code})")
            data = dict(page.fields, login=username, passwd=password, mfa_code=mfa_code or "")
            if consent and "consent" in page.checkboxes:
                data["consent"] = page.checkboxes["consent"]
            r = s.post(urljoin(r.url, page.action), data=data, allow_redirects=False, timeout=10)
        raise SignInError("the sign-in page kept asking")


def cancel(authorize_url: str, ca_path: str | Path) -> str:
    """Open the sign-in page and press Cancel; returns where the sandbox redirected (``?error=access_denied``)."""
    with _session(ca_path) as s:
        r = s.get(authorize_url, allow_redirects=False, timeout=10)
        page = _Form("cancel")
        page.feed(r.text)
        if page.action is None:
            raise SignInError(f"no cancel button (HTTP {r.status_code})")
        r = s.post(urljoin(r.url, page.action), data=page.fields, allow_redirects=False, timeout=10)
        if not r.is_redirect:
            raise SignInError(f"cancel did not redirect (HTTP {r.status_code})")
        return r.headers["Location"]


def device_login(verification_uri: str, user_code: str, username: str, password: str,
                 ca_path: str | Path, mfa_code: str | None = None) -> str:
    """Completes /devicelogin; returns the confirmation text or raises SignInError."""
    with _session(ca_path) as s:
        r = s.post(verification_uri, data={"otc": user_code, "login": username, "passwd": password,
                                           "mfa_code": mfa_code or ""}, timeout=10)
        page = _Form("devicelogin")
        page.feed(r.text)
        if page.done:
            return page.done
        raise SignInError(page.error or f"device login failed (HTTP {r.status_code})")
