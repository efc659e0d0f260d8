"""The web app on the demo's store: pages, actions, access rules, CSRF, headers, access log, API, metrics."""

from __future__ import annotations

import logging
import re
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from mailwarden.checks import diagnoses
from mailwarden.checks.base import Outcome, Status
from mailwarden.checks.facts import facts
from mailwarden.monitor.demo import INTEGRATIONS
from mailwarden.monitor.web import views
from mailwarden.monitor.web.api import openapi
from mailwarden.monitor.web.auth import Access, safe_next, verify_password
from tests.dashboards.conftest import PASSWORD, basic, csrf_of, login, make_app, small_store

BROKEN = {"enaio-notify", "enaio-webclient", "hoth-sales", "hoth-facilities", "oracle-b2c-support",
          "oracle-b2c-billing", "sinch-sales", "sinch-escalations", "agiloft-contracts"}


def rows(html: str) -> list[tuple[str, str]]:
    return re.findall(r'data-integration="([^"]+)" data-status="([^"]+)"', html)


# -- pages ------------------------------------------------------------------------------------------------
def test_overview_lists_integrations_worst_first_with_their_codes(client):
    html = client.get("/").text
    got = rows(html)
    assert len(got) == len(INTEGRATIONS)
    ranks = [views.RANK[s] for _, s in got]
    assert ranks == sorted(ranks), got
    assert {n for n, s in got if s == "fail"} == BROKEN
    assert {n for n, s in got if s == "warn"} == {"agiloft-inbound", "sinch-billing"}  # expiring; throttled
    assert {n for n, s in got if s == "ok"} == {"hoth-support", "hoth-it", "sinch-queue"}
    for code in ("secret_expired", "refresh_token_revoked", "consent_missing", "access_policy_denied",
                 "smtp_auth_disabled_mailbox", "authenticated_not_connected", "mailbox_not_found", "auth_failed",
                 "consumer_not_collecting"):
        assert code in html
    assert "open incidents" in html and "#1 " in html
    assert "expire within 90 days" in html and "enaio 2024" in html  # the expired enaio secret on the timeline


def test_overview_rows_show_24h_uptime_and_mark_integrations_whose_checks_stopped(demo, tmp_path):
    from datetime import UTC, timedelta

    from mailwarden.monitor.web.app import create_app

    env, _ = demo
    cfg = env.runtime.config
    now = datetime.now(UTC)
    store = small_store(tmp_path / "o.db", cfg, now, stale=("hoth-support",), failing=("sinch-sales",))
    store.history.rollup_history(now + timedelta(minutes=10))
    try:
        with TestClient(create_app(cfg, store, access=Access(mode="none")), base_url="http://127.0.0.1:8080") as c:
            html = c.get("/").text
        got = dict(rows(html))
        assert got["sinch-sales"] == "fail" and got["hoth-support"] == "ok"
        row = {name: html[html.index(f'data-integration="{name}"'):] for name in got}
        row = {name: part[:part.index("</tr>")] for name, part in row.items()}
        assert [n for n, r in row.items() if "s-stale" in r] == ["hoth-support"]
        assert "The monitor has stalled" not in html  # the others report: only one integration has stopped
        # 24 h availability: an hourly bar and the figure; the failing one names its hour not fully up and, its
        # token check failing since its first result, is 0 % available (its other checks ok change nothing)
        for r in row.values():
            # (named by its <title>, which is also the tooltip: no aria-label repeating it on each of 1,000 rows)
            assert 'role="img"><title>availability, last 24 hours' in r and re.search(r">[\d.]+%</div>", r)
        assert f"not fully up at {now - timedelta(minutes=1):%H}:00" in row["sinch-sales"]
        assert ">0.0%</div>" in row["sinch-sales"]
        assert "no failure" in row["sinch-queue"] and ">100.0%</div>" in row["sinch-queue"]
    finally:
        store.close()


def test_integration_page_shows_diagnosis_and_flow_filtered_fix_steps(client, demo):
    env, _ = demo
    cfg = env.runtime.config
    for name, check in (("enaio-notify", "token"), ("sinch-sales", "graph_mail"), ("hoth-sales", "imap")):
        html = client.get(f"/integrations/{name}").text
        r = next(r for r in env.runtime.store.checks.latest_results(name) if r.check == check)
        outcome = Outcome(Status(r.status), r.code, r.summary, r.latency_ms, r.details)
        steps = diagnoses.render_fix(r.code, **facts(cfg, cfg.integration(name), outcome))
        assert steps and "What to do" in html
        for step in steps:
            assert _escaped(step) in html, step
        assert diagnoses.get(r.code).title in html
    html = client.get("/integrations/oracle-b2c-support").text
    assert "mailwarden reauth oracle-b2c-support" in html  # reauthorisation state of a revoked token
    assert client.get("/integrations/nosuch").status_code == 404


def _escaped(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def test_filters_by_tag_tenant_and_status(client):
    assert {n for n, _ in rows(client.get("/?tag=dms").text)} == {"enaio-notify", "enaio-webclient"}
    assert {s for _, s in rows(client.get("/?status=ok").text)} == {"ok"}
    assert {n for n, _ in rows(client.get("/?status=problem").text)} == BROKEN | {"agiloft-inbound",
                                                                                   "sinch-billing"}
    assert rows(client.get("/?tenant=nosuch").text) == []
    assert len(rows(client.get("/?tenant=contoso").text)) == len(INTEGRATIONS)


def test_ack_and_snooze_go_through_the_alerts_store(client, demo):
    store = demo[0].runtime.store
    inc = next(i for i in store.alerts.incidents("open") if not i.ack_by)
    page = client.get("/")
    r = client.post(f"/incidents/{inc.id}/ack", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303
    assert store.alerts.get_incident(inc.id).ack_by == "admin"
    assert "acknowledged by admin" in client.get("/").text
    r = client.post(f"/incidents/{inc.id}/snooze", data={"csrf_token": csrf_of(page.text), "for": "2h"},
                    follow_redirects=False)
    assert r.status_code == 303 and store.alerts.get_incident(inc.id).snoozed_until is not None
    bad = client.post(f"/incidents/{inc.id}/snooze", data={"csrf_token": csrf_of(page.text), "for": "90d"})
    assert bad.status_code == 400 and "30 days" in bad.text
    assert client.post("/incidents/99999/ack", data={"csrf_token": csrf_of(page.text)}).status_code == 404


def test_rerun_runs_the_check_through_the_monitors_runner(demo, admin_hash):
    from mailwarden.monitor.scheduler import Monitor

    env, _ = demo
    monitor = Monitor(env.runtime)
    seen = []
    monitor.on_result = seen.append
    app = make_app(env, Access(mode="password", user="admin", password_hash=admin_hash), monitor=monitor)
    before = len(env.runtime.store.checks.results("sinch-queue", "token", limit=500))
    with TestClient(app, base_url="http://127.0.0.1:8080") as c:
        login(c)
        page = c.get("/integrations/sinch-queue").text
        assert "Re-run now" in page
        r = c.post("/integrations/sinch-queue/checks/token/run", data={"csrf_token": csrf_of(page)})
        assert r.status_code == 200 and "token re-run: ok" in r.text
        assert c.post("/integrations/sinch-queue/checks/imap/run",
                      data={"csrf_token": csrf_of(page)}).status_code == 404
    assert len(env.runtime.store.checks.results("sinch-queue", "token", limit=500)) == before + 1
    assert [(s.integration, s.check) for s in seen] == [("sinch-queue", "token")]


# -- access ------------------------------------------------------------------------------------------------
def test_without_login_pages_redirect_and_api_answers_401(app):
    with TestClient(app, base_url="http://127.0.0.1:8080") as c:
        r = c.get("/integrations/enaio-notify?x=1", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fintegrations%2Fenaio-notify%3Fx%3D1"
        for path in ("/api/status", "/api/integrations", "/metrics", "/api/openapi.json"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/api/status", headers=basic()).status_code == 200  # scripts and Prometheus: Basic on GET
        assert c.get("/api/status", headers=basic(password="wrong")).status_code == 401
        assert login(c, "wrong").status_code == 401
        r = login(c)
        assert r.status_code == 303 and c.get("/").status_code == 200


def test_every_post_without_the_csrf_token_is_refused(client, app):
    posts = [r.path for r in app.routes if "POST" in getattr(r, "methods", set())]
    assert len(posts) >= 5
    for path in posts:
        url = path.replace("{name}", "sinch-queue").replace("{check}", "token").replace("{id:id}", "1")
        assert client.post(url, data={}).status_code == 403, url
        assert client.post(url, data={"csrf_token": "forged"}).status_code == 403, url
    # the right token from another origin is refused too
    token = csrf_of(client.get("/").text)
    r = client.post("/incidents/1/ack", data={"csrf_token": token}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example", "evil",
                                    "http:/evil.example", "/%0d%0aLocation:x", ""])
def test_login_never_redirects_off_site(app, target):
    with TestClient(app, base_url="http://127.0.0.1:8080") as c:
        page = c.get("/login")
        r = c.post("/login", data={"username": "admin", "password": PASSWORD, "csrf_token": csrf_of(page.text),
                                   "next": target}, follow_redirects=False)
        assert r.status_code == 303
        loc = r.headers["location"]
        assert loc.startswith("/") and not loc.startswith(("//", "/\\")) and "evil" not in loc.split("?")[0][:2]
        assert safe_next(target) == loc


def test_security_headers_on_every_response(client):
    for path in ("/", "/integrations/enaio-notify", "/api/status", "/metrics", "/healthz", "/static/app.css",
                 "/login"):
        h = client.get(path).headers
        csp = h["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "same-origin"
    cookie = client.cookies.jar
    assert any(c.name == "mailwarden_session" for c in cookie)
    assert "<script>" not in client.get("/").text and " onclick=" not in client.get("/").text


def test_session_cookie_is_secure_behind_https(demo, admin_hash):
    env, _ = demo
    cfg = env.runtime.config.model_copy(deep=True)
    cfg.web.base_url = "https://mailwarden.example"
    app = make_app(type("E", (), {"runtime": type("R", (), {"config": cfg, "store": env.runtime.store})})(),
                   Access(mode="password", user="admin", password_hash=admin_hash))
    with TestClient(app, base_url="https://mailwarden.example") as c:
        r = c.get("/login")
        set_cookie = r.headers["set-cookie"].lower()
        assert "secure" in set_cookie and "httponly" in set_cookie and "samesite=lax" in set_cookie
        assert "strict-transport-security" in r.headers


def test_auth_none_and_trusted_proxy_header(demo):
    env, _ = demo
    with TestClient(make_app(env, Access(mode="none")), base_url="http://127.0.0.1:8080") as c:
        assert c.get("/").status_code == 200 and "web.auth: none" in c.get("/").text
    proxy = Access(mode="proxy", proxy_header="X-Forwarded-User", trusted_proxies=("testclient",))
    with TestClient(make_app(env, proxy), base_url="http://127.0.0.1:8080") as c:
        assert c.get("/", headers={"X-Forwarded-User": "alice@contoso.com"}).status_code == 200
        assert c.get("/").status_code == 401
    untrusted = Access(mode="proxy", proxy_header="X-Forwarded-User", trusted_proxies=("127.0.0.1",))
    with TestClient(make_app(env, untrusted), base_url="http://127.0.0.1:8080") as c:
        assert c.get("/", headers={"X-Forwarded-User": "mallory"}).status_code == 401


def test_access_log_has_no_query_strings_or_reauth_tokens(client, caplog):
    caplog.set_level(logging.INFO, logger="mailwarden.web.access")
    client.get("/api/results?integration=sinch-queue&code=SECRETCODE123")
    client.get("/reauth/TOKENVALUE987/callback?state=abc")
    client.get("/?tag=dms")
    text = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert "GET /api/results 200" in text and "GET / 200" in text
    assert "SECRETCODE123" not in text and "TOKENVALUE987" not in text and "?" not in text
    assert "/reauth/[redacted]" in text


# -- API, metrics, secrets ---------------------------------------------------------------------------------
def _check(value, schema, doc, where="$"):
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return _check(value, doc["components"]["schemas"][name], doc, where)
    types = schema.get("type")
    types = [types] if isinstance(types, str) else types
    pytypes = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "null": type(None),
               "object": dict, "array": list}
    if types:
        ok = any(isinstance(value, pytypes[t]) and not (t in ("integer", "number") and isinstance(value, bool))
                 for t in types)
        assert ok, f"{where}: {value!r} is not {types}"
    if "enum" in schema and value is not None:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if schema.get("format") == "date-time" and isinstance(value, str):
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, dict):
        for key in schema.get("required", []):
            assert key in value, f"{where}: missing {key}"
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _check(value[key], sub, doc, f"{where}.{key}")
        if isinstance(schema.get("additionalProperties"), dict):
            for key, v in value.items():
                _check(v, schema["additionalProperties"], doc, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check(item, schema["items"], doc, f"{where}[{i}]")


def test_api_answers_match_the_openapi_document(client):
    doc = client.get("/api/openapi.json").json()
    assert doc == openapi() and doc["openapi"].startswith("3.1")
    urls = {"/api/status": "/api/status", "/api/integrations": "/api/integrations?status=problem",
            "/api/integrations/{name}": "/api/integrations/enaio-notify",
            "/api/results": "/api/results?integration=enaio-notify&limit=5",
            "/api/incidents": "/api/incidents?status=all", "/api/credentials": "/api/credentials",
            "/api/secrets": "/api/secrets"}
    assert set(urls) == set(doc["paths"])
    for path, url in urls.items():
        r = client.get(url)
        assert r.status_code == 200, url
        schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        body = r.json()
        assert body, url
        _check(body, schema, doc, url)
    status = client.get("/api/status").json()
    assert status["counts"]["fail"] == len(BROKEN) and status["worst"] == "fail" and status["open_incidents"] >= 8
    ints = client.get("/api/integrations").json()
    assert [i["name"] for i in ints][-2:] and ints[0]["status"] == "fail"
    nf = client.get("/api/integrations/nosuch")
    assert nf.status_code == 404
    _check(nf.json(), {"$ref": "#/components/schemas/Error"}, doc)
    results = client.get("/api/results?integration=enaio-notify").json()
    assert {r["code"] for r in results} >= {"secret_expired", "blocked_by_token"} and results[0]["fix"] is not None


def test_metrics_parse_in_the_prometheus_exposition_format(client):
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name in ("mailwarden_check_status", "mailwarden_check_up", "mailwarden_check_latency_seconds",
                 "mailwarden_credential_expiry_seconds", "mailwarden_notification_failures",
                 "mailwarden_notifications", "mailwarden_check_duration_seconds", "mailwarden_open_incidents",
                 "mailwarden_newest_result_age_seconds", "mailwarden_integration_availability_ratio"):
        assert name in families, name
    up = {(s.labels["integration"], s.labels["check"]): s.value for s in families["mailwarden_check_up"].samples}
    assert up[("enaio-notify", "token")] == 0 and up[("sinch-queue", "graph_mail")] == 1
    expiry = [s for s in families["mailwarden_credential_expiry_seconds"].samples
              if s.labels["app"] == "enaio-smtp-oauth2"]
    assert expiry and expiry[0].value < 0


def test_no_secret_value_in_pages_api_metrics_or_report(client, demo, tmp_path):
    from mailwarden.monitor.web.report import render_report

    env, _ = demo
    secrets = [p.read_text().strip() for p in Path(env.config_path).parent.glob("secrets/*.secret")]
    assert len(secrets) >= 5
    bodies = [client.get(p).text for p in ("/", "/api/status", "/api/integrations", "/api/credentials",
                                           "/api/incidents?status=all", "/metrics")]
    for i in env.runtime.config.integrations:
        bodies += [client.get(f"/integrations/{i.name}").text, client.get(f"/api/integrations/{i.name}").text,
                   client.get(f"/api/results?integration={i.name}&limit=500").text]
    bodies.append(render_report(env.runtime.config, env.runtime.store))
    blob = "\n".join(bodies)
    for s in secrets:
        assert s not in blob
    cache = env.runtime.tokens.stored_row("hoth-support")
    assert cache is not None and cache.ciphertext.decode(errors="ignore")[:40] not in blob
    assert not re.search(r"eyJ[A-Za-z0-9_-]{10,}\.", blob), "a JWT in the output"


def test_password_hash_round_trip():
    from mailwarden.monitor.web.auth import hash_password

    h = hash_password("s3cret-pass", n=2**12)
    assert h.startswith("scrypt$4096$8$1$") and verify_password("s3cret-pass", h)
    assert not verify_password("other", h) and not verify_password("s3cret-pass", "garbage")


def test_secrets_inventory_page_and_api(client, demo):
    env, _ = demo
    from mailwarden.monitor.secrets import SecretsCycle  # noqa: F401 - the demo's first secrets cycle already ran

    doc = client.get("/api/secrets").json()
    creds = {c["display_name"]: c for c in doc["credentials"]}
    agiloft = creds["Agiloft Application for OAuth2"]
    assert agiloft["days_left"] == 10 and set(agiloft["integrations"]) == {"agiloft-inbound", "agiloft-contracts"}
    assert agiloft["long_lived"] is True  # created 720 days before it ends: over 12 months
    assert creds["mailwarden monitor"]["used_by_mailwarden"] is True  # its own secret is watched too
    page = client.get("/secrets")
    assert page.status_code == 200
    assert "Agiloft Application for OAuth2" in page.text and "agiloft-contracts" in page.text
    assert "Microsoft recommends under 12 months" in page.text
    scenario = (Path(__file__).resolve().parents[2] / "sandbox" / "scenarios" / "demo.yaml").read_text()
    for line in scenario.splitlines():
        if 'value: "' in line:
            secret = line.split('value: "')[1].split('"')[0]
            assert secret not in page.text and secret not in str(doc)
