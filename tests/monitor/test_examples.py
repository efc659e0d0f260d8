"""examples/ (issue 17 item 4): one complete, working configuration per consuming system and one with all five. Each
loads without a warning, validates against the JSON Schema, runs the mailbox checks its vendor's guide implies, sends
alerts, starts the web app (a base_url people can open, and an access rule), keeps secrets as env:/file: references
only, and its header names nothing that exists only in this repository."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailwarden.checks.smtp import login_identity
from mailwarden.monitor import config as config_mod
from mailwarden.monitor.cli import app
from tests.monitor.test_schema import read_yaml, schema_errors

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MAILBOX_CHECKS = {"imap", "pop", "smtp", "graph_mail", "ews"}
# What each guide implies: system file -> (flow, the mailbox checks of each of its integrations, token permissions)
SYSTEMS = {
    "house-on-the-hill": ("delegated", {"pop", "smtp"}, {"exchange:POP.AccessAsUser.All", "exchange:SMTP.Send"}),
    "oracle-b2c": ("delegated", {"pop"}, {"exchange:POP.AccessAsUser.All"}),
    "sinch": ("app", {"graph_mail"}, {"graph:Mail.ReadWrite"}),
    "agiloft": ("app", {"ews"}, {"exchange:full_access_as_app"}),
    "enaio": ("app", {"smtp"}, {"exchange:SMTP.SendAsApp"}),
}
FILES = [*SYSTEMS, "mailwarden"]
INTERNAL = ("shared/", "seeds", "sandbox", "tests/", ".txt", "M365_FACTS", "DESIGN")


def path_of(name: str) -> Path:
    return EXAMPLES / f"{name}.yaml"


def header(path: Path) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines[:next(i for i, ln in enumerate(lines) if not ln.startswith("#"))])


@pytest.mark.parametrize("name", FILES)
def test_example_loads_without_warnings_and_validates_against_the_schema(name):
    cfg, warnings = config_mod.load_with_warnings(path_of(name))
    assert warnings == []
    assert schema_errors(read_yaml(path_of(name))) == []
    res = CliRunner().invoke(app, ["validate", "-c", str(path_of(name))])
    assert res.exit_code == 0, res.output
    assert cfg.integrations and all(i.owners and i.tags and i.system for i in cfg.integrations)


@pytest.mark.parametrize("name", FILES)
def test_example_runs_mailbox_checks_and_secret_expiry(name):
    cfg = config_mod.load(path_of(name))
    for integ in cfg.integrations:
        assert {"token", "secret_expiry"} <= set(integ.checks), integ.name
        assert MAILBOX_CHECKS & set(integ.checks), f"{integ.name} runs no mailbox check"


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_each_system_as_its_guide_describes(name):
    flow, mailbox_checks, permissions = SYSTEMS[name]
    cfg = config_mod.load(path_of(name))
    for integ in cfg.integrations:
        assert integ.flow == flow
        assert MAILBOX_CHECKS & set(integ.checks) == mailbox_checks, integ.name
        assert set(integ.checks["token"]["require"]) == permissions, integ.name
        if flow == "delegated":
            assert integ.account
        if "smtp" in integ.checks:
            # SMTP with a delegate's token authenticates as the delegate, not the shared mailbox (M365 facts)
            assert login_identity(integ.flow, integ.mailbox, integ.account) == (integ.account or integ.mailbox)


def test_house_on_the_hill_signs_in_as_the_delegate_for_a_shared_mailbox():
    integ = config_mod.load(path_of("house-on-the-hill")).integration("hoth-support")
    assert integ.account != integ.mailbox
    assert login_identity(integ.flow, integ.mailbox, integ.account) == integ.account


def test_oracle_b2c_authenticates_each_mailbox_again_after_a_new_secret():
    cfg = config_mod.load(path_of("oracle-b2c"))
    assert all(i.reauth_after_rotation and i.account == i.mailbox for i in cfg.integrations)


@pytest.mark.parametrize("name", FILES)
def test_example_alerts_and_starts_the_web_app(name, monkeypatch):
    from mailwarden.monitor.web.auth import access_from, hash_password

    cfg = config_mod.load(path_of(name))
    assert cfg.alerts.active() and cfg.alerts.routes and cfg.alerts.owner_route
    assert any(r.default for r in cfg.alerts.routes)
    tags = {t for i in cfg.integrations for t in i.tags}
    assert tags <= {t for r in cfg.alerts.routes for t in r.tags}, "every integration's tag has a route"
    web = cfg.web
    assert web.enabled and web.auth_mode() == "password"  # what `serve` needs to start the web app
    assert web.base_url.startswith("https://") and not config_mod._loopback(web.base_url)
    monkeypatch.setenv(web.password_hash.removeprefix("env:"), hash_password("correct horse", n=2**4))
    assert access_from(web, cfg.base_dir).mode == "password"


@pytest.mark.parametrize("name", FILES)
def test_example_secrets_are_references_only(name, monkeypatch):
    cfg = config_mod.load(path_of(name))
    refs = config_mod.references(cfg) + [("web.password_hash", cfg.web.password_hash)]
    assert refs
    for where, ref in refs:
        scheme, _, target = ref.partition(":")
        assert scheme in ("env", "file"), where
        if scheme == "file":
            assert target.startswith("/"), f"{where}: a file of the install, not of this repository"
        else:
            monkeypatch.setenv(target, "x" * 40)
    res = CliRunner().invoke(app, ["validate", "-c", str(path_of(name)), "--resolve"])
    # only the file: references of the install (certificates in /etc/mailwarden) are missing here
    unresolved = [ln for ln in res.output.splitlines() if ln.startswith("  - ")]
    assert all("file /etc/mailwarden/" in ln for ln in unresolved), res.output


@pytest.mark.parametrize("name", FILES)
def test_example_header_points_at_nothing_internal(name):
    text = header(path_of(name))
    assert "mailwarden validate" in text and "mailwarden schema" in text
    assert not any(word in text for word in INTERNAL), text


def test_the_all_five_example_holds_every_system_file():
    whole = config_mod.load(path_of("mailwarden"))
    assert {i.system for i in whole.integrations} >= {"House-on-the-Hill helpdesk", "Oracle B2C Service",
                                                      "Sinch Contact Center", "Agiloft", "enaio"}
    for name in SYSTEMS:
        part = config_mod.load(path_of(name))
        for integ in part.integrations:
            assert whole.integration(integ.name) == integ, integ.name
            assert whole.app_of(integ) == part.app_of(integ), integ.name
        assert part.web == whole.web and part.tenants == whole.tenants
