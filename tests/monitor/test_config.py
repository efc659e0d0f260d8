"""Configuration: valid shapes load; every kind of mistake is reported with key path and line."""

import textwrap
from pathlib import Path

import pytest

from mailwarden.errors import ConfigError, SecretReferenceError
from mailwarden.monitor import config as config_mod

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mailwarden.yaml"

BASE = """\
tenants:
  contoso: {tenant_id: 11111111-2222-3333-4444-555555555555, monitor_app: mon}
apps:
  mon: {tenant: contoso, client_id: 12121212-3434-5656-7878-909090909090, secret: env:MON_SECRET}
  helpdesk: {tenant: contoso, client_id: 66666666-7777-8888-9999-000000000000, secret: env:HD_SECRET}
integrations:
  - name: helpdesk-support
    app: helpdesk
    flow: delegated
    account: helpdesk-mail@contoso.com
    mailbox: support@contoso.com
"""


def write(tmp_path, text):
    p = tmp_path / "mailwarden.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def problems(tmp_path, text):
    with pytest.raises(ConfigError) as info:
        config_mod.load(write(tmp_path, text))
    return info.value.problems, info.value.message()


def test_example_config_is_valid():
    cfg = config_mod.load(EXAMPLE)
    assert [i.name for i in cfg.integrations][:2] == ["hoth-support", "oracle-b2c-support"]
    assert cfg.apps["mailwarden"].certificate is not None
    assert cfg.threshold(cfg.integration("agiloft-inbound"), "interval") == 600


def test_defaults_and_durations(tmp_path):
    cfg = config_mod.load(write(tmp_path, BASE + "    interval: 90s\n    timeout: 1m\n"))
    integ = cfg.integration("helpdesk-support")
    assert (integ.interval, integ.timeout) == (90, 60)
    assert list(integ.checks) == ["token", "secret_expiry"]
    assert cfg.defaults.failure_threshold == 2
    assert cfg.database_url() == f"sqlite:///{tmp_path / 'mailwarden.db'}"


def test_compound_durations(tmp_path):
    """1h30m, 2d12h, 1m30s wherever a duration is taken (issue 17 item 4), within the same bounds as before."""
    text = BASE + "    interval: 1h30m\n    timeout: 1m30s\n" + \
        "alerts: {reminder_interval: 2d12h, maintenance: [{name: w, cron: '0 22 * * tue', duration: 1h30m}]}\n"
    cfg = config_mod.load(write(tmp_path, text))
    integ = cfg.integration("helpdesk-support")
    assert (integ.interval, integ.timeout) == (5400, 90)
    assert cfg.alerts.reminder_interval == 2.5 * 86400 and cfg.alerts.maintenance[0].duration == 5400
    found, _ = problems(tmp_path, BASE + "    interval: 30d24h1s\n")  # 31 days and a second: over the bound
    assert any(p.startswith("integrations[0].interval (line 12): must be between 1s and 31d") for p in found), found
    found, _ = problems(tmp_path, BASE + "    interval: 30m1h\n")  # units from the largest down
    assert any("not a duration: '30m1h'" in p for p in found), found


def test_checks_as_list_or_mapping(tmp_path):
    cfg = config_mod.load(write(tmp_path, BASE + "    checks: [token]\n"))
    assert cfg.integration("helpdesk-support").checks == {"token": {}}
    cfg = config_mod.load(write(tmp_path, BASE + "    checks: {token: null, secret_expiry: {warning_days: 10}}\n"))
    assert cfg.integration("helpdesk-support").checks["secret_expiry"] == {"warning_days": 10}


def test_every_error_has_key_path_and_line(tmp_path):
    text = BASE.replace("mailbox: support@contoso.com", "mailbox: not-an-address\n    colour: blue")
    text += "  - {name: second, app: nowhere, flow: app, mailbox: a@b.com}\n"
    found, message = problems(tmp_path, text)
    assert any(p.startswith("integrations[0].mailbox (line 11)") and "e-mail" in p for p in found), found
    assert any(p.startswith("integrations[0].colour (line 12): unknown key") for p in found), found
    assert "problem(s)" in message and str(tmp_path) in message


def test_cross_references_are_named(tmp_path):
    text = BASE + "  - {name: second, app: nowhere, flow: app, mailbox: a@b.com, checks: [token, imapx]}\n"
    found, _ = problems(tmp_path, text)
    assert any(p.startswith("integrations[1].app (line 12): no app named 'nowhere'") for p in found), found
    # the list form names the item as written: checks[1]
    assert any(p.startswith("integrations[1].checks[1] (line 12): unknown check 'imapx'") for p in found), found


def test_check_options_are_validated(tmp_path):
    found, _ = problems(tmp_path, BASE + "    checks: {secret_expiry: {warning_dayz: 3}}\n")
    assert any(p.startswith("integrations[0].checks.secret_expiry.warning_dayz") for p in found), found
    found, _ = problems(tmp_path, BASE + "    checks: {token: {require: [Mail.Read]}}\n")
    assert any("graph:Name" in p for p in found), found


def test_inline_secret_is_refused(tmp_path):
    found, _ = problems(tmp_path, BASE.replace("secret: env:HD_SECRET", "secret: abc~realsecret"))
    assert any(p.startswith("apps.helpdesk.secret (line 5)") and "reference" in p for p in found), found
    assert not any("abc~realsecret" in p for p in found)


def test_delegated_needs_account_and_app_has_none(tmp_path):
    found, _ = problems(tmp_path, BASE.replace("    account: helpdesk-mail@contoso.com\n", ""))
    assert any("needs 'account'" in p for p in found)
    found, _ = problems(tmp_path, BASE.replace("flow: delegated", "flow: app"))
    assert any("only for flow: delegated" in p for p in found)


def test_duplicate_names_and_custom_cloud(tmp_path):
    dup = BASE + "  - {name: helpdesk-support, app: helpdesk, flow: app, mailbox: a@b.com}\n"
    found, _ = problems(tmp_path, dup)
    assert any("duplicate name" in p and "integrations[0]" in p for p in found)
    found, _ = problems(tmp_path, "cloud: custom\n" + BASE)
    assert any(p.startswith("endpoints") and "custom" in p for p in found)


def test_malformed_yaml_names_the_line(tmp_path):
    _, message = problems(tmp_path, "tenants:\n  a: [1, 2\nb: 3\n")
    assert "malformed YAML" in message and "line" in message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        config_mod.load(tmp_path / "nope.yaml")
    assert "does not exist" in info.value.message() and "nope.yaml" in info.value.message()


def test_wrong_type_and_top_level(tmp_path):
    found, _ = problems(tmp_path, BASE.replace("apps:\n", "defaults: {failure_threshold: many}\napps:\n"))
    assert any(p.startswith("defaults.failure_threshold (line 3)") for p in found), found
    _, message = problems(tmp_path, "- just\n- a list\n")
    assert "top level must be a mapping" in message


def test_resolve_ref(tmp_path, monkeypatch):
    monkeypatch.setenv("MW_TEST_SECRET", "s3cr3t-value")
    assert config_mod.resolve_ref("env:MW_TEST_SECRET", tmp_path, what="x") == "s3cr3t-value"
    (tmp_path / "s.txt").write_text("from-file-value\n")
    assert config_mod.resolve_ref("file:s.txt", tmp_path, what="x") == "from-file-value"
    with pytest.raises(SecretReferenceError, match="MW_UNSET_VAR is not set"):
        config_mod.resolve_ref("env:MW_UNSET_VAR", tmp_path, what="apps.a.secret")
    with pytest.raises(SecretReferenceError, match="cannot be read"):
        config_mod.resolve_ref("file:missing.txt", tmp_path, what="apps.a.secret")


def test_schema_lists_sections():
    schema = config_mod.Config.model_json_schema()
    assert {"tenants", "apps", "integrations", "defaults", "cloud"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


class _CountingList(list):
    """A list that counts the times it is walked end to end."""

    walks = 0

    def __iter__(self):
        type(self).walks += 1
        return super().__iter__()


def test_integration_lookup_is_indexed_and_follows_edits(tmp_path, monkeypatch):
    """The scheduler and every worker look an integration up by name per due check (1,000s per cycle): once indexed,
    a lookup must not walk the list, and an index must never answer from a list edited since."""
    monkeypatch.setenv("MON_SECRET", "x")
    monkeypatch.setenv("HD_SECRET", "x")
    cfg = config_mod.load(write(tmp_path, BASE))
    first = cfg.integrations[0]
    many = [first.model_copy(update={"name": f"hd-{i}"}) for i in range(200)]
    cfg.integrations = _CountingList(many)
    assert cfg.integration("hd-150") is many[150]
    walked = _CountingList.walks
    for i in range(200):
        assert cfg.integration(f"hd-{i}") is many[i]
    assert _CountingList.walks == walked, "each lookup walked the list of integrations"
    # Edits are followed: an element replaced, the list reordered, a name removed, a new list.
    renamed = many[3].model_copy(update={"name": "renamed"})
    cfg.integrations[3] = renamed
    assert cfg.integration("renamed") is renamed
    with pytest.raises(KeyError):
        cfg.integration("hd-3")
    cfg.integrations.reverse()
    assert cfg.integration("hd-0") is many[0]
    del cfg.integrations[0]  # hd-199
    with pytest.raises(KeyError):
        cfg.integration("hd-199")
    cfg.integrations = [first]
    assert cfg.integration("helpdesk-support") is first
    with pytest.raises(KeyError):
        cfg.integration("hd-0")
