"""A real browser (Playwright driving Debian's chromium) against the demo's dashboard and static report.

Skipped without chromium or playwright, except under MAILWARDEN_REQUIRE_SERVICES=1 (CI), where that is a
failure. The screenshot goes to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time

import pytest

from mailwarden.monitor.demo import INTEGRATIONS
from mailwarden.monitor.web.auth import Access
from tests.browser_fixtures import serving
from tests.dashboards.conftest import ARTIFACTS, PASSWORD, make_app


@pytest.fixture
def served(demo, admin_hash):
    env, _ = demo
    app = make_app(env, Access(mode="password", user="admin", password_hash=admin_hash))
    with serving(app) as url:
        yield url, env


def test_dashboard_in_a_browser(browser, served):
    url, env = served
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    assert page.url.startswith(url + "/login")  # the login first
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.login button")
    page.wait_for_url(url + "/")

    rows = page.locator("tr.row")
    statuses = rows.evaluate_all("els => els.map(e => e.dataset.status)")
    names = rows.evaluate_all("els => els.map(e => e.dataset.integration)")
    assert len(names) == len(INTEGRATIONS) and statuses[0] == "fail" and statuses[-1] == "ok"
    assert statuses.index("warn") > statuses.index("fail")
    assert names.index("enaio-notify") < names.index("sinch-queue")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)

    # a failing integration shows its fix
    page.click("tr.row[data-integration=enaio-notify] td.name a")
    page.wait_for_url(url + "/integrations/enaio-notify")
    assert page.locator("section.check.s-fail .fix li").count() >= 3
    assert "Certificates & secrets" in page.locator(".fix").first.inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboard-integration.png"), full_page=True)

    # a filter applies as soon as it changes (external JS), without a button press
    page.goto(url + "/")
    with page.expect_navigation():
        page.select_option("form.filters select[name=tag]", "dms")
    assert "tag=dms" in page.url
    assert set(page.locator("tr.row").evaluate_all("els => els.map(e => e.dataset.integration)")) == {
        "enaio-notify", "enaio-webclient"}

    # acknowledge an incident
    page.goto(url + "/")
    store = env.runtime.store
    target = next(i for i in store.alerts.incidents("open") if not i.ack_by)
    page.click(f"form[action='/incidents/{target.id}/ack'] button")
    page.wait_for_load_state()
    assert "acknowledged by admin" in page.locator(".flash").inner_text()
    assert store.alerts.get_incident(target.id).ack_by == "admin"
    assert page.locator(f"form[action='/incidents/{target.id}/ack'] button").is_disabled()
    assert errors == [], errors
    page.close()


def test_static_report_opens_from_a_file_without_network(browser, demo, tmp_path):
    env, _ = demo
    out = tmp_path / "status.html"
    subprocess.run([sys.executable, "-m", "mailwarden.monitor", "report", "-c", str(env.config_path), "-o", str(out)],
                   check=True, capture_output=True, timeout=60)
    context = browser.new_context(offline=True)
    page = context.new_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.route(re.compile(r"^(?!file:).*"), lambda route: route.abort())
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(out.as_uri())
    assert page.locator("tr.row").count() == len(INTEGRATIONS)
    assert page.locator("#i-enaio-notify .fix li").count() >= 3
    # the inline CSS applied: a failing chip is red, and the text is in the stylesheet's fonts (escaped, the
    # stylesheet's quotes became &#34; and the whole font declaration was dropped: the browser's serif)
    color = page.locator("tr.row .chip.s-fail").first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert color == "rgb(198, 40, 40)"
    font = page.evaluate("getComputedStyle(document.body).fontFamily")
    assert font.startswith("system-ui") and "serif" not in font.replace("sans-serif", ""), font
    assert [u for u in requests if not u.startswith("file:")] == [] and errors == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"))
    context.close()


def test_demo_prints_the_dashboard_url_and_a_login_that_works(tmp_path):
    import httpx

    err = tmp_path / "stderr.log"
    with err.open("w") as ferr:
        proc = subprocess.Popen([sys.executable, "-m", "mailwarden.monitor", "demo", "--port", "0",
                                 "--workdir", str(tmp_path / "w")],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=ferr, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not (m := re.search(r"Dashboard: (http://127\.0\.0\.1:\d+)/\n.*password (\S+)", err.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()[-2000:]
            time.sleep(0.2)
        url, password = m.group(1), m.group(2)
        with httpx.Client(base_url=url, timeout=10) as c:
            assert c.get("/healthz").json()["status"] == "ok"
            assert c.get("/api/status").status_code == 401
            r = c.get("/api/status", auth=("admin", password))
            assert r.status_code == 200 and r.json()["integrations"] == len(INTEGRATIONS)
        proc.terminate()
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert password not in (tmp_path / "w" / "mailwarden.yaml").read_text()
    shutil.rmtree(tmp_path / "w", ignore_errors=True)
