"""The JSON Schema of the configuration (`mailwarden schema`, issue 17 item 4): what an editor does with it must agree
with what the loader does. It validates the project's own configs (every file in examples/, the demo's), types
durations as the strings the loader takes (a shared pattern) or numbers of seconds, takes the shorthand forms the
loader takes (``checks: [token, pop]``, ``token:`` with nothing), describes every key (hover help), carries ``$schema``
and ``$id``, and shows no internal (``base_dir``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from mailwarden.monitor import config as config_mod
from mailwarden.monitor.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MINIMAL = {
    "tenants": {"contoso": {"tenant_id": "11111111-2222-3333-4444-555555555555"}},
    "apps": {"hd": {"tenant": "contoso", "client_id": "66666666-7777-8888-9999-000000000000", "secret": "env:HD"}},
    "integrations": [{"name": "hd", "app": "hd", "flow": "app", "mailbox": "support@contoso.com"}],
}


class _Yaml12ish(yaml.SafeLoader):
    """YAML as an editor's language server reads it (YAML 1.2 core): 2027-01-31 is a string, not a date object."""


_Yaml12ish.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def read_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_Yaml12ish)  # noqa: S506 - a SafeLoader subclass


def schema_errors(doc: Any) -> list[str]:
    """Every place ``doc`` breaks the schema, as 'path: message' (empty: valid)."""
    validator = jsonschema.Draft202012Validator(config_mod.json_schema())
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def with_integration(**changes: Any) -> dict:
    doc = json.loads(json.dumps(MINIMAL))
    doc["integrations"][0].update(changes)
    return doc


def test_the_schema_is_valid_json_schema_with_its_own_id():
    schema = config_mod.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and ":" in schema["$id"]
    assert schema["title"] == "mailwarden configuration" and schema["description"]
    res = CliRunner().invoke(app, ["schema"])
    assert res.exit_code == 0 and json.loads(res.stdout) == schema


def _properties(node: Any, path: str = "#"):
    """(path, property schema) of every property anywhere in the schema."""
    if isinstance(node, dict):
        for name, prop in node.get("properties", {}).items():
            yield f"{path}/properties/{name}", prop
        for key, value in node.items():
            yield from _properties(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _properties(value, f"{path}/{i}")


def test_every_key_has_a_description():
    """Hover help for every key: a property is described itself or by the definition it refers to."""
    schema = config_mod.json_schema()
    described = 0
    missing = []
    for path, prop in _properties(schema):
        ref = prop.get("$ref", "")
        target = schema["$defs"].get(ref.rpartition("/")[2], {}) if ref else {}
        if prop.get("description") or target.get("description"):
            described += 1
        else:
            missing.append(path)
    assert not missing, f"keys without a description: {missing}"
    assert described >= 130  # 126 keys and the eight check kinds when this was written; five were described before


def test_internals_are_not_keys():
    schema = config_mod.json_schema()
    names = {path.rpartition("/")[2] for path, _ in _properties(schema)}
    assert "base_dir" not in names
    assert schema_errors({**MINIMAL, "base_dir": "/etc"})  # an editor flags it, as the loader does
    cfg = config_mod.Config.model_validate(MINIMAL)
    cfg.base_dir = Path("/srv/mw")  # what load() sets: still an attribute of the loaded configuration
    assert cfg.base_dir == Path("/srv/mw") and cfg.path("x.pem") == Path("/srv/mw/x.pem")


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_validates_against_the_schema(path):
    assert schema_errors(read_yaml(path)) == []


def test_the_demo_config_validates_against_the_schema(tmp_path):
    from mailwarden.monitor import demo

    scenario = yaml.safe_load(demo.demo_scenario().read_text(encoding="utf-8"))
    endpoints = {"authority": "https://127.0.0.1:8443", "graph": "https://127.0.0.1:8443/v1.0",
                 "ews": "https://127.0.0.1:8443/EWS/Exchange.asmx", "imap": "127.0.0.1:9993", "pop": "127.0.0.1:9995",
                 "smtp": "127.0.0.1:9587", "ca_bundle": str(tmp_path / "ca.pem")}
    web, _ = demo._web_section(0)
    path = demo.write_config(tmp_path, endpoints, scenario, 60, web)
    assert schema_errors(read_yaml(path)) == []
    config_mod.load(path)  # and the loader takes it


@pytest.mark.parametrize("value", ["5m", "90s", "1h30m", "2d12h", "1.5h", "250ms", "1d2h3m4s", " 1h 30m ", 300, 45.5])
def test_durations_are_strings_or_seconds_in_the_schema_as_in_the_loader(value):
    doc = {**MINIMAL, "defaults": {"interval": value}, "alerts": {"reminder_interval": value}}
    assert schema_errors(doc) == []
    assert config_mod.parse_duration(value) > 0


@pytest.mark.parametrize("value", ["5 minutes", "30m1h", "1h30", "1h1h", "-1s", "", "h", "1e3s"])
def test_what_is_no_duration_is_refused_by_both(value):
    assert schema_errors({**MINIMAL, "defaults": {"interval": value}})
    with pytest.raises(ValueError):
        config_mod.parse_duration(value)


def test_every_duration_key_is_typed_as_a_string_pattern():
    """No duration is typed `number` only (an editor then flagged `interval: 5m`)."""
    schema = config_mod.json_schema()
    durations = [path for path, prop in _properties(schema)
                 if any(branch.get("pattern") == config_mod.DURATION_PATTERN for branch in prop.get("anyOf", ()))
                 or any(branch.get("pattern") == config_mod.DURATION_PATTERN
                        for outer in prop.get("anyOf", ()) for branch in outer.get("anyOf", ()))]
    for key in ("Defaults/properties/interval", "Defaults/properties/timeout", "WebConfig/properties/refresh",
                "AlertsConfig/properties/reminder_interval", "IntegrationConfig/properties/interval",
                "MaintenanceWindow/properties/duration", "SignInEvidenceConfig/properties/keep"):
        assert any(p.endswith(key) for p in durations), (key, durations)


@pytest.mark.parametrize("checks", [["token", "pop"], {"token": None, "pop": {"backlog_warn": 50}},
                                    {"token": {}, "secret_expiry": {"warning_days": 10}}])
def test_shorthand_forms_of_checks_are_accepted(checks, tmp_path):
    doc = with_integration(checks=checks)
    assert schema_errors(doc) == []
    path = tmp_path / "mailwarden.yaml"
    path.write_text(yaml.safe_dump(doc))
    config_mod.load(path)


def test_schema_refuses_what_the_loader_refuses():
    assert schema_errors(with_integration(checks=["token", "imapp"]))  # no such check kind
    assert schema_errors(with_integration(mailbx="x@contoso.com"))  # an unknown key
    assert schema_errors(with_integration(flow="sideways"))
    doc = json.loads(json.dumps(MINIMAL))
    doc["apps"]["hd"]["secret"] = "abc~an-inline-secret"  # secrets are references only
    assert schema_errors(doc)
