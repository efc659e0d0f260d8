"""What `check` and `demo` print: progress while checks run, then a table, worst first; and the JSON of a result,
the same object wherever a result is given as JSON (``result_json``)."""

from __future__ import annotations

import asyncio
from datetime import UTC
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.padding import Padding
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mailwarden.checks.base import SEVERITY_ORDER, Outcome, Status

if TYPE_CHECKING:  # pragma: no cover
    from mailwarden.monitor.config import Config
    from mailwarden.monitor.runner import Runner, RunResult

COLOURS = {"ok": "green", "warn": "yellow", "fail": "bold red", "error": "magenta", "blocked": "dim"}


def result_json(config: Config, r: Any) -> dict[str, Any]:
    """One result (a ``CheckResult`` row: stored, or as it would have been stored) as JSON: what `mailwarden check
    --format json` and the demo print, and what /api/results and /api/integrations/NAME answer. The fix steps are
    chosen by the result's own facts and check kind, for the integration's flow (``checks.facts.facts``);
    ``details`` are the stored metrics plus the integration's tenant, flow and mailbox (None once it has left the
    config). ``id`` is None for a result that could not be stored."""
    from mailwarden.checks.diagnoses import render_fix
    from mailwarden.checks.facts import facts
    from mailwarden.redact import redact

    outcome = Outcome(Status(r.status), r.code, r.summary, r.latency_ms, dict(r.details or {}))
    try:
        integ = config.integration(r.integration)
    except KeyError:  # stored, no longer in the config
        integ = None
    app = config.apps.get(integ.app) if integ is not None else None
    fix = [] if r.status == Status.OK.value else render_fix(
        r.code or "unclassified", **(facts(config, integ, outcome, r.check) if integ is not None
                                     else {"integration": r.integration}))
    return {
        "id": r.id, "integration": r.integration, "check": r.check, "status": r.status, "code": r.code,
        "summary": redact(r.summary), "fix": fix,
        "latency_ms": round(r.latency_ms, 1) if r.latency_ms is not None else None,
        "checked_at": r.checked_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "details": {**(r.details or {}), "tenant": config.tenant_name_of(integ) if app and integ is not None else None,
                    "flow": integ.flow if integ is not None else None,
                    "mailbox": integ.mailbox if integ is not None else None},
    }


def run_with_progress(runner: Runner, selection: list[tuple[str, list[str]]], *, show: bool) -> list[RunResult]:
    total = sum(len(k) for _, k in selection)
    if not show or total < 4:
        return asyncio.run(runner.run_many(selection))
    with Progress(TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as progress:
        task = progress.add_task("checks", total=total)
        return asyncio.run(runner.run_many(selection, on_result=lambda _r: progress.advance(task)))


def sort_rows(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (SEVERITY_ORDER[Status(r["status"])], r["integration"], r["check"]))


WIDE = 110  # narrower terminals get one line per check and its summary below it, not a folded table


def print_table(rows: list[dict], console: Console | None = None, title: str | None = None) -> None:
    console = console or Console()
    if console.width < WIDE:
        _print_lines(rows, console, title)
    else:
        table = Table(title=title, show_lines=False)
        for col in ("integration", "check", "status", "code"):
            table.add_column(col, no_wrap=True)
        table.add_column("summary", overflow="fold", ratio=1)
        for r in sort_rows(rows):
            colour = COLOURS.get(r["status"], "")
            table.add_row(r["integration"], r["check"], f"[{colour}]{r['status']}[/]", r["code"] or "",
                          r["summary"])
        console.print(table)
    broken = [r for r in sort_rows(rows) if r["status"] in ("fail", "error") and r["fix"]]
    for r in broken:
        console.print(f"\n[bold]{r['integration']} / {r['check']}[/]: {r['code']}")
        for n, step in enumerate(r["fix"], 1):
            console.print(f"  {n}. {step}")


def _print_lines(rows: list[dict], console: Console, title: str | None) -> None:
    if title:
        console.print(f"[bold]{title}[/]")
    for r in sort_rows(rows):
        colour = COLOURS.get(r["status"], "")
        code = f"  {r['code']}" if r["code"] else ""
        console.print(f"[{colour}]{r['status']:<7}[/] {r['integration']} / {r['check']}{code}", soft_wrap=False,
                      overflow="fold")
        console.print(Padding(r["summary"] or "", (0, 0, 0, 8), expand=False), style="dim", overflow="fold")
