"""The cron baseline of `python -m bench`: its token provider takes every argument mailwarden's does (a keyword added
to TokenProvider once made a quarter of its token checks fail with a TypeError, and the baseline, cheaper for it,
understated the speed-up), and a baseline whose checks did not all pass judges nothing."""

from __future__ import annotations

import inspect

from bench.cycle import Measured
from bench.phases import FreshTokens
from bench.report import figures
from mailwarden.monitor.tokens import TokenProvider


def test_fresh_tokens_take_every_argument_the_token_provider_takes():
    for name in ("app_token", "delegated_token"):
        fresh = inspect.signature(getattr(FreshTokens, name)).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in fresh.values())
        for param in inspect.signature(getattr(TokenProvider, name)).parameters.values():
            assert param.name in fresh or (takes_any and param.kind is param.KEYWORD_ONLY), (name, param.name)


def doc_with_baseline(statuses: dict[str, int]) -> dict:
    cycle = Measured(wall_s=10.0, cpu_s=5.0, checks=34, statuses={"ok": 34})
    base = Measured(wall_s=20.0, cpu_s=4.0, checks=34, statuses=statuses)
    return figures(10, 50, {"ideal_s": 5.0}, [cycle, cycle, cycle], {}, {}, base, 10, 100.0, {})


def test_the_speed_up_is_judged_only_against_a_baseline_whose_checks_passed():
    assert doc_with_baseline({"ok": 34})["figures"]["speedup_vs_cron"] == 2.0
    failing = doc_with_baseline({"ok": 24, "error": 5, "blocked": 5})
    assert failing["figures"]["speedup_vs_cron"] is None and failing["verdicts"]["speedup_vs_cron"] == "info"
    assert failing["figures"]["baseline_statuses"] == {"ok": 24, "error": 5, "blocked": 5}
