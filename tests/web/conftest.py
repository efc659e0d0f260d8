"""The web app on a config without integrations and an empty SQLite store: enough for what reaches the app
before any page reads the checks (sign-in, sessions, limits, hosts, bodies), and fast (no sandbox)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import yaml
from starlette.testclient import TestClient

from mailwarden.monitor import config as config_mod
from mailwarden.monitor.db import open_store
from mailwarden.monitor.web.app import create_app
from mailwarden.monitor.web.auth import Access, hash_password

PASSWORD = "correct horse battery"  # noqa: S105 - the test admin's password
BASE = "http://127.0.0.1:8080"


@pytest.fixture(scope="session")
def admin_hash():
    return hash_password(PASSWORD, n=2**12)  # cheaper than the default: the format is the same


def write_config(path: Path, web: dict | None = None) -> config_mod.Config:
    path.mkdir(parents=True, exist_ok=True)
    doc = {"database": "sqlite:///mw.db", "web": {"base_url": BASE, **(web or {})}}
    (path / "mailwarden.yaml").write_text(yaml.safe_dump(doc))
    return config_mod.load(path / "mailwarden.yaml")


class World:
    """A config and its store; ``app()`` builds a web app on them (as `serve` does, or with a given access)."""

    def __init__(self, path: Path, admin_hash: str):
        self.path, self.admin_hash = path, admin_hash
        self.cfg = write_config(path)
        self.store = open_store(self.cfg.database_url())

    def configure(self, **web) -> None:
        self.cfg = write_config(self.path, web)

    def access(self, **kw) -> Access:
        return Access(**{"mode": "password", "user": "admin", "password_hash": self.admin_hash, **kw})

    def app(self, access: Access | None = None, **kw):
        return create_app(self.cfg, self.store, access=access or self.access(), **kw)

    def client(self, app=None, *, base_url: str = BASE, **kw) -> TestClient:
        return TestClient(app or self.app(), base_url=base_url, **kw)


@pytest.fixture
def world(tmp_path, admin_hash):
    w = World(tmp_path / "w", admin_hash)
    yield w
    w.store.close()


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def login(client: TestClient, password: str = PASSWORD, user: str = "admin"):
    page = client.get("/login")
    return client.post("/login", data={"username": user, "password": password, "csrf_token": csrf_of(page.text),
                                       "next": "/"}, follow_redirects=False)


def basic(user: str = "admin", password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
