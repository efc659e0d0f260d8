"""Outside text in alerts (hardening issue, item 2). A mail server's reply, the display name an app owner gives a
secret in Entra ID, the name an incident was acknowledged with: each was interpolated raw into the markdown body,
and through ``mailto://`` (HTML mail), Slack, Telegram and some 30 other Apprise schemes an alert arrived carrying a
working "Re-authorise here" link to a phishing page. Here hostile strings go into every place outside text reaches,
for every kind of notice, and each body is read the way a receiver reads it: the plain-text body and the title as a
mail program or chat client does (which links bare URLs and host names), the markdown body as CommonMark
(markdown-it), as the HTML Apprise converts it to (Python-Markdown), and as Slack's mrkdwn and Telegram's Markdown
(Apprise's own conversions). Nowhere may a link, an HTML tag or a linkable URL appear that mailwarden did not
write: the only links are to its ``web.base_url``.
"""

from __future__ import annotations

import email
import html.parser
import re
import string
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import apprise
import pytest
from apprise.conversion import markdown_to_html
from apprise.plugins.slack import NotifySlack
from apprise.plugins.telegram import NotifyTelegram
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

import mailwarden.alerts
from mailwarden.alerts import expiry, inert, messages, routes
from mailwarden.alerts.policy import Notice
from mailwarden.alerts.records import Incident
from mailwarden.checks import diagnoses
from mailwarden.monitor.config import Config

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
BASE = "https://mw.contoso.com"
APP_ID = "66666666-7777-8888-9999-000000000000"
PHISH = "https://login-microsoftonline.com/common/reauth"

# What an attacker writes: links in every syntax a receiver honours, and ways around a naive filter.
LINKS = [
    f"[Re-authorise here]({PHISH})", f"![x]({PHISH}/pixel.png)", f'<a href="{PHISH}">Re-authorise here</a>',
    f"<{PHISH}>", "<security@evil-support.com>", PHISH, "www.evil-support.com/reauth", "evil-support.com/reauth",
    "login.microsoftonline.com.evil.net",
    "evil\u200b.net__https://login-microsoftonline.com/common/reauth",  # found by the fuzz below: Slack's "__"
    "[Re-authorise][1]\n\n[1]: https://evil.net/x", f"<{PHISH}|Re-authorise>",
    "<!channel> <@U024BE7LH>", "ｈｔｔｐｓ：／／evil．net/x", "ht\u200btps://evil.net/\u200bx", "evil\u200b.net",
    "\u202eten.live\u202c", "```\ncode\n```", "\n# Re-authorise now\n", "\n\n---\n", "\n> quoted\n", "\n- item\n",
    f"{BASE}@evil.net/x", f"{BASE}.evil.net/x", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl(https://evil.net)",
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "[x](<https://evil.net>)",
]
# Markup characters that make no link on their own, but may complete one across a value's edges.
NOISE = ["`", "``", "\n1. step\n", "*", "_", "**", "~~", "\\", "&lt;a href=x&gt;", "&amp;", "javascript:alert(1)",
         "|a|b|\n|---|---|"]
FILLER = string.ascii_letters + string.digits + " *_[]()<>!#`~|&;:/\\-=+\"'\n\t\u200b\u00a0éß漢"
hostile = st.lists(st.one_of(st.sampled_from(LINKS + NOISE), st.text(FILLER, max_size=8)), min_size=1, max_size=5).map(
    "".join)

# -- what a receiver counts as a link ------------------------------------------------------------------------------
_TLDS_FILE = Path(__import__("hypothesis").__file__).parent / "vendor" / "tlds-alpha-by-domain.txt"
TLDS = {line.strip().lower() for line in _TLDS_FILE.read_text().splitlines() if line and not line.startswith("#")}
_LABEL = r"[^\W_](?:[\w-]*[^\W_])?"
HOST = re.compile(rf"(?<![\w@.-]){_LABEL}(?:\.{_LABEL})+")
URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s<>\"'`\]\)|]+")


def _sources() -> str:
    """mailwarden's own wording: the diagnosis catalog, the runbooks and the templates (hosts named there are its)."""
    root = Path(mailwarden.alerts.__file__).parent
    lifecycle = root.parent / "monitor"  # the secrets cycle and rotation tracking word their own notices
    files = [Path(diagnoses.__file__), root / "expiry.py", lifecycle / "secrets.py", lifecycle / "rotation.py",
             *sorted((root.parent / "dashboards" / "templates" / "alerts").glob("*.j2"))]
    return "\n".join(f.read_text() for f in files)


OWN_HOSTS = {m.group(0).lower() for m in HOST.finditer(_sources())}


def own(url: str) -> bool:
    parts, base = urlsplit(url), urlsplit(BASE)
    return (parts.scheme, parts.netloc) == (base.scheme, base.netloc) and parts.path.startswith("/")


def linkable(text: str) -> list[str]:
    """What a mail program or chat client would make a link of, and mailwarden did not write: a URL, a www. host or
    a host name with a real top-level domain (as clients read it: full-width forms folded, zero-width dropped)."""
    text = "".join(ch for ch in unicodedata.normalize("NFKC", text) if unicodedata.category(ch) != "Cf")
    found = []
    for m in URL.finditer(text):
        if not own(m.group(0)) and urlsplit(m.group(0)).hostname not in OWN_HOSTS:
            found.append(m.group(0))
    text = URL.sub(" ", text)
    for m in HOST.finditer(text):
        labels = m.group(0).lower().split(".")
        if (labels[0] == "www" or any(label in TLDS for label in labels[1:])) and m.group(0).lower() not in OWN_HOSTS:
            found.append(m.group(0))
    return found


class _Html(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


OWN_TAGS = {"p", "strong", "code", "ul", "ol", "li", "a", "br"}  # what the markdown templates produce


def html_problems(body: str) -> list[str]:
    parser = _Html()
    parser.feed(body)
    parser.close()
    out = [f"tag <{t}>" for t, _ in parser.tags if t not in OWN_TAGS]
    for tag, attrs in parser.tags:
        if tag == "a" and (set(attrs) != {"href"} or not own(attrs["href"])):
            out.append(f"link {attrs}")
        elif tag != "a" and attrs:
            out.append(f"<{tag} {attrs}>")
    return out + [f"linkable {u!r}" for u in linkable(" ".join(parser.text))]


MD = MarkdownIt("commonmark")
OWN_BLOCKS = {"paragraph_open", "paragraph_close", "bullet_list_open", "bullet_list_close", "ordered_list_open",
              "ordered_list_close", "list_item_open", "list_item_close", "inline"}
OWN_INLINE = {"text", "strong_open", "strong_close", "code_inline", "link_open", "link_close", "softbreak",
              "hardbreak"}


def markdown_problems(body: str) -> list[str]:
    out = []
    for token in MD.parse(body):
        if token.type not in OWN_BLOCKS:
            out.append(f"block {token.type}")
        for child in token.children or []:
            if child.type not in OWN_INLINE:
                out.append(f"inline {child.type} {child.content!r}")
            elif child.type == "link_open" and not own(str(child.attrs.get("href"))):
                out.append(f"link {child.attrs.get('href')!r}")
    return out + html_problems(MD.render(body))


def slack_problems(body: str) -> list[str]:
    mrkdwn = NotifySlack._commonmark_to_slack(body)
    out = []
    for m in re.finditer(r"<([^<>]*)>", mrkdwn):
        target = m.group(1).split("|", 1)[0]
        if not own(target):
            out.append(f"slack <{m.group(1)}>")
    return out + [f"linkable {u!r}" for u in linkable(re.sub(r"<[^<>]*>", " ", mrkdwn))]


def telegram_problems(body: str) -> list[str]:
    """Telegram's Markdown (v1) and MarkdownV2, as Apprise converts the markdown body (``tgram://`` takes markdown)."""
    out = []
    for strict in (False, True):
        converted = NotifyTelegram._commonmark_to_telegram(body, strict=strict)
        markup = re.sub(r"(?<!\\)`[^`]*`", "`code`", converted)  # nothing inside a code span is markup
        for m in re.finditer(r"(?<!\\)\[((?:\\.|[^\]\\])*)\]\(((?:\\.|[^)\\])*)\)", markup):
            if not own(m.group(2).replace("\\", "")):
                out.append(f"telegram link {m.group(0)!r}")
        plain = re.sub(r"\]\(((?:\\.|[^)\\])*)\)", "]", converted).replace("\\", "")
        out += [f"telegram linkable {u!r}" for u in linkable(plain)]
    return out


def problems(msg: messages.Message) -> dict[str, list[str]]:
    """Every foreign link or tag, per format a receiver reads the message in."""
    found = {
        "title": [f"linkable {u!r}" for u in linkable(msg.title)],
        "title as markdown": html_problems(markdown_to_html(inert.md_escape(msg.title))),
        "text": [f"linkable {u!r}" for u in linkable(msg.text)],
        "markdown": markdown_problems(msg.markdown),
        "html": html_problems(markdown_to_html(msg.markdown)),
        "slack": slack_problems(msg.markdown),
        "telegram": telegram_problems(msg.markdown),
    }
    return {k: v for k, v in found.items() if v}


# -- every kind of notice, with outside text wherever it reaches ---------------------------------------------------
def config(window: str = "patch", tenant: str = "contoso") -> Config:
    def integ(name: str, flow: str) -> dict:
        return {"name": name, "app": "helpdesk", "flow": flow, "system": "Oracle B2C Service",
                "mailbox": f"{name}@contoso.com", "checks": {"token": {}, "pop": {}, "secret_expiry": {}},
                **({"account": "svc-mail@contoso.com"} if flow == "delegated" else {})}
    return Config.model_validate({
        "database": "sqlite:///:memory:", "web": {"base_url": BASE},
        "tenants": {tenant: {"tenant_id": "11111111-2222-3333-4444-555555555555", "monitor_app": "mailwarden"}},
        "apps": {"helpdesk": {"tenant": tenant, "client_id": APP_ID, "secret": "env:APP", "display_name": "Helpdesk"},
                 "mailwarden": {"tenant": tenant, "client_id": "12121212-3434-5656-7878-909090909090",
                                "secret": "env:MONITOR"}},
        "integrations": [integ("support", "delegated"), integ("billing", "delegated"), integ("sales", "app")],
        "alerts": {"maintenance": [{"name": window, "cron": "0 22 * * tue", "duration": "3h"}]}})


def incident(kind: str, code: str, names: list[str], text: str, **extra) -> Incident:
    members = [{"integration": n, "check": "pop", "status": "fail", "code": code, "since": NOW.isoformat()}
               for n in names]
    return Incident(id=7, key=f"{kind}:{code}", kind=kind, code=code, members=members, affected=names,
                    opened_at=NOW - timedelta(hours=2), status="open", tenant=text, client_id=APP_ID, ack_by=text,
                    ack_at=NOW, reminders=2, **extra)


def every_message(text: str) -> list[tuple[str, messages.Message]]:
    cfg = config()
    facts = {(n, c): messages.CheckFacts(text, NOW - timedelta(days=1), {"phases_ms": {}})
             for n in ("support", "billing", "sales") for c in ("pop", "token")}
    ctx = messages.Context(cfg, facts, reauth_urls={n: f"{BASE}/reauth/1.2.mac" for n in ("support", "billing")})
    out = []
    for kind, code in (("single", "auth_failed"), ("single", "refresh_token_revoked"), ("credential", "secret_expired"),
                       ("account", "refresh_token_revoked"), ("grouped", "idp_unreachable"),
                       ("monitor", "graph_unreadable"), ("single", "unclassified")):
        inc = incident(kind, code, ["support", "billing"] if kind != "single" else ["support"], text)
        for notice in ("opened", "reminder", "grouped"):
            out.append((f"{notice} {kind} {code}", messages.render(Notice(notice, inc, 1), ctx)))
        for reason in ("recovered", "removed"):
            done = inc.model_copy(update={"status": "resolved", "resolved_at": NOW, "resolve_reason": reason})
            out.append((f"resolved/{reason} {code}", messages.render(Notice("resolved", done, 2), ctx)))
    for code in ("ok", "auth_failed"):
        flap = incident("flapping", code, ["support"], text)
        out.append((f"flapping {code}", messages.render(Notice("flapping", flap, 1), ctx)))
    held = [incident("single", "auth_failed", ["support"], text)]
    out.append(("maintenance_summary", messages.render(
        Notice("maintenance_summary", None, 1, window=text, window_end=NOW, incidents=held), ctx)))
    out.append(("test", messages.render(Notice("test", None, window="hook", window_end=NOW), ctx, route=text)))
    cred = expiry.CredentialFacts("helpdesk", APP_ID, "client_secret", text, text, text, NOW + timedelta(days=5))
    users = [cfg.integration("support"), cfg.integration("sales")]
    out.append(("expiry", expiry.render_reminder(cfg, cred, users, 7, NOW, "expiry/x/7")))
    out.append(("rotation", expiry.render_rotation(cfg, app_name="helpdesk", event="stuck", headline=text, detail=text,
                                                   steps=[text, f"See `mailwarden secrets history` ({text})"],
                                                   key="rotation/x/stuck", notify_type="failure")))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile)
def test_no_notice_carries_a_link_or_tag_mailwarden_did_not_write(text):
    """Fuzz: hostile outside text in every slot of every notice kind, read as text, markdown, HTML and Slack."""
    for name, msg in every_message(text):
        assert not problems(msg), (name, problems(msg), msg.markdown)


@pytest.mark.parametrize("attack", LINKS)
def test_each_known_attack_is_inert(attack):
    """Each way to a link or tag on its own (the fuzz mixes them), the issue's "Re-authorise here" first."""
    for name, msg in every_message(f"AADSTS50173 {attack} please"):
        assert not problems(msg), (name, problems(msg), msg.markdown)


def test_mailwardens_own_links_and_markup_stay():
    """Escaping must not cost the alert its own links, code spans and emphasis, nor readability of outside text."""
    msgs = dict(every_message("550 5.7.60 Client does not have permissions [x] <y> *z* a_b"))
    md = msgs["opened single refresh_token_revoked"].markdown
    assert f"[support]({BASE}/integrations/support)" in md
    assert f"<{BASE}/reauth/1.2.mac>" in md and f"({BASE}/reauth/1.2.mac)" in md
    assert "(`refresh_token_revoked`)" in md and "**Cause:**" in md and "`key: 7/opened/1`" in md
    assert r"Client does not have permissions \[x\] \<y> \*z\* a_b" in md
    text = msgs["opened single refresh_token_revoked"].text
    assert "550 5.7.60 Client does not have permissions [x] <y> *z* a_b" in text
    assert f"{BASE}/reauth/1.2.mac" in text
    html = markdown_to_html(md)
    assert f'<a href="{BASE}/integrations/support">support</a>' in html
    assert "Client does not have permissions [x] &lt;y&gt; *z* a_b" in html


def test_the_rotation_runbook_keeps_its_own_markup_in_markdown_and_none_in_text():
    """The runbook is mailwarden's wording around names from the config and Entra ID: in markdown its **Value** is
    bold and its commands code spans (they once arrived as ``\\*\\*Value\\*\\*`` and escaped backticks), in
    plain text neither markup character shows; a hint or Secret ID holding markup stays inert in both."""
    cfg = config()
    cred = expiry.CredentialFacts("helpdesk", APP_ID, "client_secret", "[kid](https://evil.example)", "Prod",
                                  "*Ab", NOW + timedelta(days=5))
    msg = expiry.render_reminder(cfg, cred, [cfg.integration("support")], 7, NOW, "expiry/x/7")
    assert "copy its **Value** at once" in msg.markdown and "\\*\\*Value" not in msg.markdown
    assert "`mailwarden check --integration support`" in msg.markdown
    assert "copy its Value at once" in msg.text and "**" not in msg.text.split("Rotation runbook:")[1]
    assert "mailwarden check --integration support passes" in msg.text
    assert "hint \\*Ab..." in msg.markdown and not problems(msg)
    html = markdown_to_html(msg.markdown)
    assert "<strong>Value</strong>" in html and "<code>mailwarden check --integration support</code>" in html


# -- through Apprise, to real receivers ----------------------------------------------------------------------------
CAPTURED: list[dict] = []


@apprise.decorators.notify(on="mwinert", name="mailwarden inert capture")
def _capture(body, title, notify_type, *args, **kwargs):
    CAPTURED.append({"body": body, "title": title})
    return True


def _phishing_notice() -> messages.Message:
    return dict(every_message(f"Your session expired. [Re-authorise here]({PHISH}) or {PHISH}"))[
        "opened single refresh_token_revoked"]


@pytest.mark.parametrize("fmt", ["text", "markdown", "html"])
def test_a_route_gets_an_inert_body_in_the_format_it_asks_for(fmt):
    """A route whose URL says ?format=markdown or ?format=html received the raw markdown (the phishing link with it);
    one on ?format=text the bare phishing URL, which a client links."""
    CAPTURED.clear()
    msg = _phishing_notice()
    outcome = routes.send(f"mwinert://?format={fmt}", title=msg.title, text=msg.text, markdown=msg.markdown,
                          notify_type=msg.notify_type)
    assert outcome.ok, outcome
    body = CAPTURED[-1]["body"]
    found = {"text": lambda b: [f"linkable {u!r}" for u in linkable(b)], "markdown": markdown_problems,
             "html": html_problems}[fmt](body)
    assert not found, (found, body)
    assert f"{BASE}/integrations/support" in body


def test_a_multi_format_service_asked_for_markdown_gets_the_escaped_markdown(receiver):
    """json:// takes text, HTML or markdown: with ?format=markdown Apprise turned the plain-text body into markdown
    without escaping HTML, so the receiver got a raw <a href> to the phishing page."""
    msg = dict(every_message(f'Session expired: <a href="{PHISH}">Re-authorise here</a>'))[
        "opened single refresh_token_revoked"]
    outcome = routes.send(receiver.url + "?format=markdown", title=msg.title, text=msg.text, markdown=msg.markdown,
                          notify_type=msg.notify_type)
    assert outcome.ok, outcome
    body = receiver.bodies[-1]["message"]
    assert not markdown_problems(body), (markdown_problems(body), body)
    assert not re.search(r"(?<!\\)<a href", body), body


def test_mailto_delivers_no_phishing_link_in_either_part(sink):
    """The issue's own case: an expiry reminder whose secret's display name (set by any app owner in Entra ID) holds
    a "Re-authorise here" link, and an incident whose mail-server reply holds one, mailed through mailto:// as
    HTML with a plain-text part."""
    cfg = config()
    name = f'Prod secret <a href="{PHISH}">Re-authorise here</a> [or here]({PHISH})'
    cred = expiry.CredentialFacts("helpdesk", APP_ID, "client_secret", "kid", name, "Abc", NOW + timedelta(days=5))
    reminder = expiry.render_reminder(cfg, cred, [cfg.integration("support")], 7, NOW, "expiry/x/7")
    url = f"mailto://127.0.0.1:{sink.port}?mode=insecure&from=mailwarden@example.com&to=oncall@example.com"
    for msg in (reminder, _phishing_notice()):
        outcome = routes.send(url, title=msg.title, text=msg.text, markdown=msg.markdown, notify_type=msg.notify_type)
        assert outcome.ok, outcome
    assert len(sink.messages) == 2
    for raw in sink.messages:
        mail = email.message_from_bytes(raw)
        parts = {p.get_content_type(): p.get_payload(decode=True).decode() for p in mail.walk()
                 if not p.is_multipart()}
        assert "text/html" in parts, parts.keys()
        assert not html_problems(parts["text/html"]), (html_problems(parts["text/html"]), parts["text/html"])
        for kind, part in parts.items():
            assert "login-microsoftonline.com" not in part, (kind, part)
        assert not linkable(mail["Subject"] or "")

