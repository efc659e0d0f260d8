"""Issue 9, hostile input: schemathesis against the app's own OpenAPI document (/api/openapi.json), the
ASGI app in process on the demo store, authenticated with HTTP Basic: no 500, and every answer conforms to
the document (status code, content type, body schema)."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks as st_checks

from tests.dashboards.conftest import basic

HOST = {"Host": "127.0.0.1:8080"}  # the app answers only its own host names (DNS rebinding)

CHECKS = [st_checks.not_a_server_error, st_checks.status_code_conformance, st_checks.content_type_conformance,
          st_checks.response_schema_conformance]


def operations(app):
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app, headers={**basic(), **HOST})
    ops = [result.ok() for result in schema.get_all_operations()]
    assert ops, "the OpenAPI document lists no operations"
    return ops


def fuzz(op, examples: int, body) -> None:
    @given(case=op.as_strategy())
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case):
        body(case)
    run()


def test_api_answers_every_generated_request_without_500_and_as_documented(app):
    for op in operations(app):
        fuzz(op, 15, lambda case: case.call_and_validate(headers={**basic(), **HOST}, checks=CHECKS))


def test_api_with_wrong_credentials_is_refused_never_500(app):
    def refused(case):
        response = case.call(headers={"Authorization": "Basic bm9ib2R5Om5vcGU=", **HOST})  # nobody:nope
        assert response.status_code in (401, 403), (case.path, response.status_code, response.text[:200])

    for op in operations(app):
        fuzz(op, 3, refused)
