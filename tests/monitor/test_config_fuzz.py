"""Hostile configuration: whatever the file holds, loading it gives a Config or a ConfigError that names
where the problem is; never another exception, never a traceback from the CLI."""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailwarden.errors import ConfigError
from mailwarden.monitor import config as config_mod

KEYS = ["database", "token_key", "cloud", "endpoints", "web", "defaults", "tenants", "apps", "integrations",
        "alerts", "name", "app", "flow", "mailbox", "account", "checks", "tenant", "client_id", "secret",
        "certificate", "interval", "timeout", "tenant_id", "monitor_app", "token", "imap", "pop", "smtp",
        "require", "routes", "url", "tags", "auth", "listen", "base_url", "failure_threshold", "x", "<<"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(string.printable, max_size=30), st.sampled_from(
                        ["env:X", "file:/nonexistent", "delegated", "app", "custom", "5m", "-1s", "global",
                         "11111111-2222-3333-4444-555555555555", "a@b.com", "sqlite:///x.db", "none"]))
keys = st.one_of(st.sampled_from(KEYS), st.text(string.ascii_letters, min_size=1, max_size=8), st.integers(0, 3))
trees = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(keys, inner, max_size=5)), max_leaves=25)
DIR = Path(tempfile.mkdtemp(prefix="mailwarden-fuzz-"))


def load_text(text: str) -> None:
    path = DIR / "mailwarden.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        config_mod.load(path)
    except ConfigError as exc:
        message = exc.message()
        assert message and "Traceback" not in message
        assert str(path) in message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), trees, max_size=6))
def test_structured_garbage(doc):
    load_text(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text(text):
    load_text(text)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data):
    path = DIR / "mailwarden.yaml"
    path.write_bytes(data)
    try:
        config_mod.load(path)
    except ConfigError as exc:
        assert str(path) in exc.message()
