"""CPU per check by kind is judged on the median of its rounds (``python -m bench --kind-rounds``), printed with
every round: one round's figure on this VM moved by half from run to run (smtp 2.0-3.8 ms, bench/RESULTS.md)."""

from __future__ import annotations

import pytest

from bench.cycle import Measured, median_cpu_ms
from bench.report import figures, render


def phase(ms: float, checks: int = 100) -> Measured:
    return Measured(wall_s=1.0, cpu_s=ms * checks / 1000, checks=checks, statuses={"ok": checks})


@pytest.mark.parametrize(("rounds", "median"), [
    ([2.0], 2.0),
    ([2.0, 5.0], 2.0),  # an even count: the lower middle, a figure one round had
    ([5.0, 2.0, 2.5], 2.5),
    ([3.1, 2.9, 3.0, 9.0], 3.0),
    ([4.0, 4.0, 1.0], 4.0),
])
def test_the_median_of_the_rounds(rounds, median):
    assert median_cpu_ms([phase(ms) for ms in rounds]) == pytest.approx(median)


def doc_for(kinds: dict[str, list[float]]) -> dict:
    cycle = phase(5.0, checks=3400)
    return figures(1000, 50.0, {"ideal_s": 1.0}, [cycle, cycle, cycle],
                   {k: [phase(ms) for ms in r] for k, r in kinds.items()}, {}, phase(1.0, 34), 10, 190.0, {})


def test_a_kind_is_judged_on_its_median_and_every_round_is_printed():
    doc = doc_for({"smtp": [2.5, 3.8, 2.7], "imap": [3.2, 3.4, 2.9], "token": [7.0, 3.0, 3.1]})
    f = doc["figures"]
    assert f["cpu_ms_per_check_by_kind"] == {"smtp": 2.7, "imap": 3.2, "token": 3.1}
    assert f["cpu_ms_per_check_by_kind_rounds"]["smtp"] == [2.5, 3.8, 2.7]
    # the mailbox kinds' worst median is the judged figure (token is not a mailbox check)
    assert f["cpu_ms_per_mailbox_check"] == 3.2 and doc["verdicts"]["cpu_ms_per_mailbox_check"] == "FAIL"
    doc["speed"] = {"start": {"tls_context_ms": 1.0, "python_loop_ms": 1.0},
                    "end": {"tls_context_ms": 1.0, "python_loop_ms": 1.0}}
    text = render(doc)
    assert "the median of 3 rounds" in text
    smtp = next(line for line in text.splitlines() if "CPU per smtp check" in line)
    assert "2.7 ms" in smtp and "PASS" in smtp and "(2.5, 3.8, 2.7)" in smtp
