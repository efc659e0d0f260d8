"""Issue 18, item 12: a slow receiver, a refused port, a route's own timeout. Real Apprise sends (json://) to loopback
HTTP servers: one that answers only after a delay, one port where nothing listens."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from mailwarden.monitor import db_alerts
from mailwarden.monitor.alerting import make_dispatcher
from mailwarden.monitor.config import RouteConfig
from mailwarden.monitor.db import open_store
from mailwarden.monitor.runtime import integration_rows
from tests.alerts.conftest import load, record, write_config

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)


class SlowReceiver:
    """A webhook that reads the whole request, counts it, and answers 200 only ``delay`` seconds later."""

    def __init__(self, delay: float):
        self.delay = delay
        self.bodies: list[dict] = []
        self.stop = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.bodies.append(json.loads(raw))
                receiver.stop.wait(receiver.delay)
                try:
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:  # the sender stopped waiting and closed the connection
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, query: str = "") -> str:
        return f"json://127.0.0.1:{self.port}/hook{query}"

    def close(self):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow():
    made: list[SlowReceiver] = []

    def make(delay: float) -> SlowReceiver:
        made.append(SlowReceiver(delay))
        return made[-1]

    yield make
    for r in made:
        r.close()


def setup(tmp_path, **kw):
    cfg = load(write_config(tmp_path / "mailwarden.yaml", **kw))
    store = open_store(cfg.database_url())
    store.inventory.sync_integrations(integration_rows(cfg), T0)
    return cfg, store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_receiver_slower_than_the_timeout_gets_the_notice_once_and_the_delivery_is_unconfirmed(tmp_path, slow):
    """Attacks the blind retry of a send that went out: a webhook that takes 3 s to answer, behind a 1 s read
    timeout (Apprise's ``rto``, set in the URL), got a copy at every retry (6 with max_attempts 6) and the delivery
    ended ``failed``. It must get the notice exactly once, and the delivery must be recorded ``unconfirmed``: sent,
    its answer missing, not sent again."""
    hook = slow(3.0)
    cfg, store = setup(tmp_path, routes=[{"name": "slow", "url": hook.url("?rto=1")}], max_attempts=6,
                       retry_backoff="30s", reminder_interval="24h")
    d = make_dispatcher(cfg, store)
    record(store, "a", "token", "fail", "consent_missing", at=T0)
    started = time.monotonic()
    first = d.run_once(T0)
    assert first.queued == 1 and first.sent == 0
    assert time.monotonic() - started < 2.9, "the send waited for the answer instead of its 1 s read timeout"
    for hours in range(1, 8):  # every retry of the old backoff would be due by now, six times over
        d.run_once(T0 + timedelta(hours=hours))
    time.sleep(0.3)  # a copy still on its way would have arrived
    assert len(hook.bodies) == 1, f"the slow webhook received {len(hook.bodies)} copies"
    assert "1/opened/1" in hook.bodies[0]["title"] + hook.bodies[0]["message"]
    [delivery] = store.alerts.deliveries()
    assert delivery.state == "unconfirmed" and delivery.claimed_by is None and delivery.attempts == 1
    [note] = store.alerts.notifications()
    assert not note.ok and not note.permanent
    assert note.error.startswith("unconfirmed: the request was sent") and "within 1 s" in note.error, note.error
    assert db_alerts.attempt_outcome(note) == "unconfirmed"
    # and the integration page says so: sent, unconfirmed, never "failed"
    from starlette.testclient import TestClient

    from mailwarden.monitor.web.app import create_app
    from mailwarden.monitor.web.auth import Access

    with TestClient(create_app(cfg, store, access=Access(mode="none")), base_url="http://127.0.0.1:8080") as c:
        page = c.get("/integrations/a").text
    assert "sent, unconfirmed" in page and "failed: unconfirmed" not in page
    store.close()


def test_a_refused_port_is_an_ordinary_failure_retried_until_it_is_delivered(tmp_path):
    """Attacks an unconfirmed rule that reaches too far, and a record that cannot tell the cases apart: a refused
    connection wrote no request, so it must stay a retryable failure (pending, retried with backoff, delivered once
    the port listens) and its record must say the connection was refused; today's record gives Apprise's one wording
    for every transport failure ("A Connection error occurred"), the same as for a receiver that got the request."""
    port = free_port()
    cfg, store = setup(tmp_path, routes=[{"name": "down", "url": f"json://127.0.0.1:{port}/hook"}],
                       retry_backoff="30s")
    d = make_dispatcher(cfg, store)
    record(store, "a", "token", "fail", "consent_missing", at=T0)
    first = d.run_once(T0)
    assert (first.queued, first.sent, first.failed) == (1, 0, 1)
    [delivery] = store.alerts.deliveries()
    assert delivery.state == "pending" and delivery.claimed_by is None
    assert delivery.next_attempt_at == T0 + timedelta(seconds=30)
    [note] = store.alerts.notifications()
    assert not note.ok and not note.permanent and "connection refused" in note.error, note.error
    assert db_alerts.attempt_outcome(note) == "error"
    assert d.run_once(T0 + timedelta(seconds=10)).failed == 0  # backoff: not due yet
    # the receiver comes up on that port: the retry delivers it, once
    receiver = _listen(port)
    try:
        assert d.run_once(T0 + timedelta(seconds=30)).sent == 1
        assert d.run_once(T0 + timedelta(hours=2)).sent == 0
        assert len(receiver.bodies) == 1
        assert [x.state for x in store.alerts.deliveries()] == ["sent"]
        assert [db_alerts.attempt_outcome(n) for n in store.alerts.notifications()] == ["error", "ok"]
    finally:
        receiver.close()
        store.close()


class _Listener:
    """A webhook answering 200 at once, on a given port."""

    def __init__(self, port: int):
        self.bodies: list[dict] = []
        bodies = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                bodies.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _listen(port: int) -> _Listener:
    return _Listener(port)


def test_a_route_timeout_lets_a_slow_webhook_answer_and_a_url_rto_still_wins(tmp_path, slow):
    """Attacks the fixed 4 s: a webhook that answers after 5 s (past Apprise's default read timeout) could not be
    reached in time whatever the configuration said. A route's ``timeout: 8s`` must reach Apprise as the service's
    connect and read timeouts, so the notice is delivered on the first attempt and recorded ``sent``; a service URL's
    own ``?rto=`` stays in force over the route's timeout."""
    assert "timeout" in RouteConfig.model_fields, \
        "monitor/config.py: RouteConfig needs `timeout: Timeout | None = None` (issue 18, item 12)"
    hook = slow(5.0)
    cfg, store = setup(tmp_path, routes=[{"name": "patient", "url": hook.url("?x=1"), "timeout": "8s"},
                                         {"name": "own-rto", "url": hook.url("?x=2&rto=1"), "timeout": "8s"}],
                       reminder_interval="24h")
    d = make_dispatcher(cfg, store)
    record(store, "a", "token", "fail", "consent_missing", at=T0)
    report = d.run_once(T0)
    assert (report.queued, report.sent) == (2, 1)
    state = {x.route: x.state for x in store.alerts.deliveries()}
    assert state == {"patient": "sent", "own-rto": "unconfirmed"}
    d.run_once(T0 + timedelta(hours=2))
    time.sleep(0.3)
    assert len(hook.bodies) == 2  # one each, none again
    assert [n.ok for n in store.alerts.notifications() if n.route == "patient"] == [True]
    store.close()


def test_a_read_timeout_of_a_request_without_the_message_stays_retryable(slow):
    """Attacks an unconfirmed rule that would drop an alert for good: some services make a request before the
    message (a token from their login endpoint); a read timeout there sent nothing, so the send must stay an ordinary,
    retried failure. Only a request that carried the message (its stable key in the body) makes a send unconfirmed."""
    from mailwarden.alerts import routes

    hook = slow(2.0)
    carried = routes.send(hook.url("?rto=0.5"), title="t [1/opened/1]", text="body\nkey: 1/opened/1", markdown="m",
                          notify_type="failure", key="1/opened/1")
    assert carried.unconfirmed and not carried.ok and carried.error.startswith("unconfirmed:"), carried
    other = routes.send(hook.url("?rto=0.5"), title="t", text="body", markdown="m", notify_type="failure",
                        key="7/reminder/3")
    assert not other.unconfirmed and not other.ok and not other.permanent, other
    assert "read timeout of a request before the message" in other.error, other.error
