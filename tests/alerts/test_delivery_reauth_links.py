"""Issue 18, item 14: the reauthorisation link is added at send time and never stored, on SQLite and PostgreSQL.

A delegated integration whose refresh token was revoked has an open reauthorisation request; its alert goes out
through json:// to a loopback receiver. The README says the database keeps only the request's nonce, never the link:
every row of every table is read back after the dispatch."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from cryptography.fernet import Fernet
from sqlalchemy import inspect, text

from mailwarden.monitor import reauth_links
from mailwarden.monitor.alerting import make_dispatcher
from mailwarden.monitor.db import open_store
from mailwarden.monitor.models import TABLE_NAMES
from mailwarden.monitor.runtime import integration_rows
from mailwarden.monitor.tokenstore import TokenCipher
from tests.alerts.conftest import load, record, write_config

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)  # the link's expiry is checked against the clock
LINK = re.compile(r"https?://mw\.example:8080/reauth/[0-9]+\.[0-9]+\.[A-Za-z0-9_-]+")


@pytest.fixture
def database(database_url):
    return database_url


def setup(tmp_path, database, receiver):
    """A delegated integration ``a`` with its token check failing as revoked and its reauthorisation request open;
    the dispatcher gets the open requests' links as the scheduler's does (``reauth_links.open_urls``)."""
    routes = [{"name": "hook", "url": receiver.url}, {"name": "md", "url": receiver.url + "?format=markdown"}]
    path = write_config(tmp_path / "mailwarden.yaml", routes=routes, database=database, reminder_interval="24h")
    doc = yaml.safe_load(path.read_text())
    doc["integrations"][0].update(flow="delegated", account="support@contoso.com", checks=["token"])
    path.write_text(yaml.safe_dump(doc))
    cfg = load(path)
    store = open_store(cfg.database_url())
    store.inventory.sync_integrations(integration_rows(cfg), T0)
    cipher = TokenCipher(Fernet.generate_key())
    record(store, "a", "token", "ok", at=T0)
    record(store, "a", "token", "fail", "refresh_token_revoked", at=T0 + timedelta(minutes=5))
    req = store.reauth.open_reauth_request("a", "refresh_token_revoked", T0 + timedelta(minutes=5))
    assert req is not None
    link = reauth_links.url_for(cfg.web.base_url, reauth_links.link_key(cipher), req)
    d = make_dispatcher(cfg, store, reauth_urls=lambda: reauth_links.open_urls(cfg, store, cipher))
    return cfg, store, cipher, req, link, d


def rows_holding(store, *needles: str) -> list[str]:
    """Every (table, column) of every row, of every table the database has, whose value holds one of ``needles``."""
    found = []
    tables = inspect(store.engine).get_table_names()
    assert set(TABLE_NAMES) <= set(tables)
    with store.engine.connect() as conn:
        for table in tables:
            result = conn.execute(text(f'SELECT * FROM "{table}"'))
            for row in result.mappings():
                for column, value in row.items():
                    if isinstance(value, memoryview):
                        value = bytes(value)
                    shown = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                    if any(n in shown for n in needles):
                        found.append(f"{table}.{column}")
    return found


def test_no_table_holds_the_reauthorisation_link_and_the_receiver_gets_a_working_one(tmp_path, database, receiver):
    """Attacks the outbox: the rendered alert, with the full signed reauthorisation link in it, was stored in
    ``alert_deliveries`` (body_text and body_markdown) on SQLite and PostgreSQL, although the README says the database
    keeps only the request's nonce, never the link; a copy of the database gave a working sign-in link. After the
    dispatch no row of any table may hold the link's token or ``/reauth/``, and the receiver must still get the link,
    one that verifies against the open request."""
    cfg, store, cipher, req, link, d = setup(tmp_path, database, receiver)
    report = d.run_once(T0 + timedelta(minutes=5))
    assert (report.queued, report.sent) == (2, 2)
    text, md = sorted((b["message"] for b in receiver.bodies), key=lambda m: "**" in m)  # plain text, markdown
    assert set(LINK.findall(text)) == {link} and f"Re-authorise:\n- a: {link}\n" in text, text
    assert set(LINK.findall(md)) == {link} and f"[a]({link})" in md and f"open <{link}>" in md, md
    token = link.rsplit("/", 1)[1]
    assert reauth_links.verify(reauth_links.link_key(cipher), token, store.reauth.get_reauth_request(req.id))
    assert rows_holding(store, token, "/reauth/") == []
    mac = token.rsplit(".", 1)[1]
    assert rows_holding(store, mac) == []
    store.close()


def test_a_request_closed_before_the_send_leaves_no_link_and_says_how_to_reauthorise(tmp_path, database, receiver):
    """Attacks a link frozen into the outbox: a notice queued while the request was open went out later with that
    link in it, after the request had closed (and, with the link stored, from any copy of the database). The link is
    put in at send time: a request closed by then gives the wording of a notice with no open request (the command
    ``mailwarden reauth NAME``, no "Re-authorise" section, no link), and no row holds the link."""
    cfg, store, cipher, req, link, d = setup(tmp_path, database, receiver)
    queued = d.evaluate(T0 + timedelta(minutes=5))  # routed into the outbox while the request is open
    assert len(queued) == 2
    assert store.reauth.close_reauth_request(req.id, "signed_in", T0 + timedelta(minutes=6))
    sent, failed = d.send_due(T0 + timedelta(minutes=6))
    assert (sent, failed) == (2, 0)
    for message in (b["message"] for b in receiver.bodies):
        assert "/reauth/" not in message and link not in message, message
        assert "Re-authorise:" not in message and "mailwarden reauth a" in message, message
        assert not re.search("[\ue000-\uf8ff]", message), "a link slot was sent as it is"
    assert rows_holding(store, link.rsplit("/", 1)[1], "/reauth/") == []
    store.close()
