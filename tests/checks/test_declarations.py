"""Issue 15 item 3: what the application knows of a check kind is declared on its class (checks.base.Check) and
nowhere else. A table over every registered kind: the declarations are there and agree with each other, with the
registry, with the endpoints, and with the kind lists the diagnosis catalog keeps (it must not import the check
modules: tests/checks/test_import_cost.py), so the two cannot drift apart."""

import dataclasses

import pytest
from pydantic import BaseModel, ValidationError

from mailwarden.checks import CHECKS, REGISTRY, TOKEN_KIND, diagnoses, permissions
from mailwarden.checks.base import FLOWS
from mailwarden.endpoints import Endpoints

KINDS = list(CHECKS)
ENDPOINT_FIELDS = {f.name for f in dataclasses.fields(Endpoints)}


def _depending_on(dep: str) -> tuple[str, ...]:
    return tuple(k for k in KINDS if dep in REGISTRY[k].depends_on)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_declares_what_the_application_needs_to_know(kind):
    check = REGISTRY[kind]
    assert check.kind == kind
    # its options: a pydantic model that refuses unknown keys, each option with a default (an empty entry runs)
    model = check.config_model
    assert issubclass(model, BaseModel) and model.model_config.get("extra") == "forbid", kind
    model.model_validate({})
    with pytest.raises(ValidationError):
        model.model_validate({"no_such_option": 1})
    # what it depends on: registered kinds, never itself, with a catalog code for being blocked by each
    assert isinstance(check.depends_on, tuple) and kind not in check.depends_on
    for dep in check.depends_on:
        assert dep in REGISTRY, f"{kind} depends on {dep!r}, which is not registered"
        assert kind not in REGISTRY[dep].depends_on, f"{kind} and {dep} depend on each other"
        assert f"blocked_by_{dep}" in diagnoses.CATALOG, f"no diagnosis for {kind} blocked by {dep}"
    # the permissions its token carries, per flow: of a known resource, each with at least one alternative
    assert set(check.needs) <= set(FLOWS), kind
    for flow, found in check.needs.items():
        for resource, any_of in found:
            assert resource in (permissions.GRAPH, permissions.EXCHANGE), (kind, flow, resource)
            assert any_of and all(isinstance(name, str) and name for name in any_of), (kind, flow)
        assert [(n.resource, n.any_of, n.why) for n in permissions.needs(flow, [kind])] == \
            [(resource, any_of, kind) for resource, any_of in found]
    assert isinstance(check.uses_app_token, bool) and isinstance(check.needs_credential, bool)
    if check.needs:
        assert check.uses_app_token, f"{kind} declares permissions but asks for no token"
    if check.uses_app_token:
        assert check.needs_credential, f"{kind} asks for the app's token without mailwarden's copy of its credential"
    # the server it talks to: an Endpoints field; a check that talks to the mailbox does so with the token check's
    # token, and that check verifies in both flows what it needs
    assert check.endpoint is None or check.endpoint in ENDPOINT_FIELDS, (kind, check.endpoint)
    if check.endpoint is not None or TOKEN_KIND in check.depends_on:
        assert TOKEN_KIND in check.depends_on and check.uses_app_token, kind
        assert all(check.needs.get(flow) for flow in FLOWS), f"{kind} needs no permission in some flow"


def test_the_token_check_is_the_one_the_mailbox_checks_depend_on():
    token = REGISTRY[TOKEN_KIND]
    assert token.depends_on == () and token.uses_app_token and token.endpoint is None
    assert _depending_on(TOKEN_KIND), "no check depends on the token check"
    # the token check gathers what its integration's checks declare, plus its own `require`
    everything = permissions.needs("delegated", KINDS, ["graph:User.Read"])
    assert {n.why for n in everything} == {*(k for k in KINDS if REGISTRY[k].needs.get("delegated")),
                                           permissions.REQUIRED}


def test_the_catalog_s_kind_lists_are_what_the_kinds_declare():
    """diagnoses keeps its lists (importing the checks would load MSAL and httpx): they must say what the
    declarations say."""
    assert diagnoses._TOKEN_USERS == tuple(k for k in KINDS if REGISTRY[k].uses_app_token)
    assert diagnoses._MAILBOX == _depending_on(TOKEN_KIND)
    for dep in {d for k in KINDS for d in REGISTRY[k].depends_on}:
        assert diagnoses.PRODUCED_BY[f"blocked_by_{dep}"] == _depending_on(dep)
    named = {k for kinds in diagnoses.PRODUCED_BY.values() for k in kinds} | set(diagnoses.ALL_KINDS)
    assert named <= set(KINDS), f"the catalog names unregistered kinds: {sorted(named - set(KINDS))}"
    # a code not listed may come from any kind: every registered kind, the consumer check's included
    assert set(diagnoses.ALL_KINDS) == set(KINDS), sorted(set(KINDS) - set(diagnoses.ALL_KINDS))
    consumer_codes = {c for c in diagnoses.CATALOG if c.startswith("consumer_") and c != "consumer_not_collecting"}
    assert consumer_codes and all(diagnoses.PRODUCED_BY.get(c) == ("consumer",) for c in consumer_codes), \
        {c: diagnoses.PRODUCED_BY.get(c) for c in consumer_codes}
    # a code a token refusal gives is returned by every check that asks for the app's token
    for code in ("secret_invalid", "consent_missing", "app_not_found", "app_not_in_tenant"):
        assert set(diagnoses._TOKEN_USERS) <= set(diagnoses.PRODUCED_BY[code]), code


@pytest.mark.parametrize(("kinds", "first"), [
    (["token", "imap", "smtp"], {"token"}),  # the mailbox checks use the token check's token
    (["token", "secret_expiry"], set()),  # nothing here depends on the token check
    (["imap", "pop"], set()),  # the token check is not configured: nothing to wait for
    (["secret_expiry", "consumer", "token", "graph_mail"], {"token"}),
    (["token", "nonexistent"], set()),  # an unknown kind depends on nothing
])
def test_dependencies_are_read_from_the_declarations(kinds, first):
    """What runs first (run_many), starts first in the schedule and is fetched first from the queue: the kinds another
    configured kind declares in ``depends_on``, never a kind chosen by name."""
    from mailwarden.checks import dependencies

    assert dependencies(kinds) == first
