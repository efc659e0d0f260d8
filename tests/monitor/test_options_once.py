"""Issue 15 item 3: a check's options are parsed once, when the configuration is loaded; its runs read that parsed
model (they were validated at load, thrown away and parsed again on every run)."""

import asyncio
import textwrap
from typing import ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, model_validator

from mailwarden import checks
from mailwarden.checks.base import Outcome
from mailwarden.checks.imap import ImapOptions
from mailwarden.monitor import config as config_mod
from mailwarden.monitor.runner import select
from mailwarden.monitor.runtime import open_runtime

PARSED: list[int] = []


class CountedOptions(BaseModel):
    """Options whose every parse is counted."""

    model_config = ConfigDict(extra="forbid")
    limit: int = 5

    @model_validator(mode="after")
    def _count(self) -> "CountedOptions":
        PARSED.append(self.limit)
        return self


class Counting:
    kind = "counted_test"
    config_model: ClassVar[type[BaseModel]] = CountedOptions
    depends_on: ClassVar[tuple[str, ...]] = ()
    needs: ClassVar[dict] = {}
    uses_app_token: ClassVar[bool] = False
    needs_credential: ClassVar[bool] = False
    endpoint: ClassVar[str | None] = None

    def __init__(self):
        self.seen: list[BaseModel] = []

    async def run(self, ctx):
        self.seen.append(ctx.options)
        return Outcome.ok(f"limit {ctx.options.limit}")


CONFIG = """\
    tenants: {t: {tenant_id: 11111111-2222-3333-4444-555555555555}}
    apps: {a: {tenant: t, client_id: 66666666-7777-8888-9999-000000000000, secret: env:X}}
    integrations:
      - {name: i0, app: a, flow: app, mailbox: box0@contoso.com, checks: {counted_test: {limit: 7}}}
      - {name: i1, app: a, flow: app, mailbox: box1@contoso.com, checks: {counted_test: {}}}
      - name: i2
        app: a
        flow: app
        mailbox: box2@contoso.com
        checks: {imap: {backlog_age: 2h}}
    """


@pytest.fixture
def counting(monkeypatch):
    check = Counting()
    registry = {**checks.REGISTRY, "counted_test": check}
    monkeypatch.setattr(checks, "REGISTRY", registry)
    import mailwarden.monitor.runner as runner_mod

    monkeypatch.setattr(runner_mod, "REGISTRY", registry)
    PARSED.clear()
    return check


def test_options_are_parsed_at_load_and_never_again_per_run(tmp_path, counting):
    (tmp_path / "mailwarden.yaml").write_text(textwrap.dedent(CONFIG))
    cfg = config_mod.load(tmp_path / "mailwarden.yaml")
    at_load = len(PARSED)
    assert at_load >= 2  # both integrations' options were read (and refused there, were they wrong)
    rt = open_runtime(cfg)
    selection = [(name, kinds) for name, kinds in select(cfg) if name in ("i0", "i1")]
    for _ in range(5):
        results = asyncio.run(rt.runner.run_many(selection))
        assert sorted(r.outcome.summary for r in results) == ["limit 5", "limit 7"]
    assert len(PARSED) == at_load, f"{len(PARSED) - at_load} parses in 5 cycles"
    # every run of an integration's check got the one model parsed at load
    by_limit: dict[int, set[int]] = {}
    for options in counting.seen:
        by_limit.setdefault(options.limit, set()).add(id(options))
    assert {k: len(v) for k, v in by_limit.items()} == {7: 1, 5: 1}
    assert any(seen is cfg.integration("i0").options("counted_test") for seen in counting.seen)


def test_a_real_kind_s_options_are_its_model_and_an_absent_check_is_a_clear_error(tmp_path, counting):
    (tmp_path / "mailwarden.yaml").write_text(textwrap.dedent(CONFIG))
    cfg = config_mod.load(tmp_path / "mailwarden.yaml")
    options = cfg.integration("i2").options("imap")
    assert isinstance(options, ImapOptions) and options is cfg.integration("i2").options("imap")
    with pytest.raises(config_mod.ConfigError, match="no valid options of a 'pop' check"):
        cfg.integration("i2").options("pop")
