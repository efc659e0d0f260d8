"""Helpers of the sandbox's Exchange tests: mailboxes, tokens and standard-library mail clients."""

from __future__ import annotations

import base64
import imaplib
import poplib
import smtplib
import ssl
import uuid

from tests.sandbox.helpers import TENANT, cca, new_app, new_user, user_tokens

EXO_DEFAULT = ["https://outlook.office365.com/.default"]
GRAPH_DEFAULT = ["https://graph.microsoft.com/.default"]
OUTLOOK_ALL = ["https://outlook.office.com/IMAP.AccessAsUser.All", "https://outlook.office.com/POP.AccessAsUser.All",
               "https://outlook.office.com/SMTP.Send"]


def new_mailbox(sb, **spec) -> str:
    spec.setdefault("address", f"mbx-{uuid.uuid4().hex[:8]}@contoso.com")
    sb.control.add_mailbox(TENANT, **spec)
    return spec["address"]


def user_with_mailbox(sb, **spec) -> str:
    upn = new_user(sb)
    new_mailbox(sb, address=upn, owner=upn, **spec)
    return upn


def app_token(sb, exchange_roles=(), graph_roles=(), service_principal=True, scope=EXO_DEFAULT) -> tuple[str, str]:
    app_id, secret = new_app(sb, application_permissions={"exchange": list(exchange_roles),
                                                          "graph": list(graph_roles)})
    if service_principal:
        sb.control.add_service_principal(TENANT, app_id)
    return app_id, cca(sb, app_id, secret).acquire_token_for_client(scope)["access_token"]


def delegated_token(sb, upn: str, scopes=OUTLOOK_ALL, exchange=None, graph=None) -> str:
    perms = {"exchange": exchange or ["IMAP.AccessAsUser.All", "POP.AccessAsUser.All", "SMTP.Send",
                                      "EWS.AccessAsUser.All"], "graph": graph or ["User.Read"]}
    app_id, secret = new_app(sb, delegated_permissions=perms)
    return user_tokens(sb, app_id, secret, upn, scopes=scopes)["access_token"]


def xoauth2(address: str, token: str) -> str:
    return f"user={address}\x01auth=Bearer {token}\x01\x01"


def b64(address: str, token: str) -> str:
    return base64.b64encode(xoauth2(address, token).encode()).decode()


def ctx(sb) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(sb.ca_path))


def hostport(sb, name: str) -> tuple[str, int]:
    host, port = sb.endpoints[name].rsplit(":", 1)
    return host, int(port)


def imap(sb, timeout: float = 5) -> imaplib.IMAP4_SSL:
    host, port = hostport(sb, "imap")
    return imaplib.IMAP4_SSL(host, port, ssl_context=ctx(sb), timeout=timeout)


def imap_login(sb, address: str, token: str) -> imaplib.IMAP4_SSL:
    im = imap(sb)
    im.authenticate("XOAUTH2", lambda _: xoauth2(address, token).encode())
    return im


def pop(sb, timeout: float = 5) -> poplib.POP3_SSL:
    host, port = hostport(sb, "pop")
    return poplib.POP3_SSL(host, port, context=ctx(sb), timeout=timeout)


def pop_auth(p: poplib.POP3_SSL, address: str, token: str) -> bytes:
    """Two-step AUTH XOAUTH2 (poplib has no helper); raises poplib.error_proto on -ERR."""
    assert p._shortcmd("AUTH XOAUTH2") == b"+ "
    return p._shortcmd(b64(address, token))


def smtp(sb, timeout: float = 5, tls: bool = True) -> smtplib.SMTP:
    host, port = hostport(sb, "smtp")
    s = smtplib.SMTP(host, port, timeout=timeout)
    s.ehlo()
    if tls:
        s.starttls(context=ctx(sb))
        s.ehlo()
    return s


def smtp_auth(s: smtplib.SMTP, address: str, token: str):
    return s.auth("XOAUTH2", lambda challenge=None: xoauth2(address, token), initial_response_ok=False)
