"""`python -m bench.importtime`: what importing mailwarden's parts costs, each in a fresh interpreter.

The architecture issue's target: `import mailwarden.checks.diagnoses` (the diagnosis catalog, which the CLI, the
alerts and the web app all read) under 100 ms, without MSAL, httpx or any of `monitor`'s modules. Prints, per module,
the wall time of `python -X importtime -c "import <module>"` summed from its own report (best of five runs), how many
modules it loaded, and whether the heavy libraries came with it; beside the machine's speed reference
(bench/report.py), since every figure here moves with the host."""

from __future__ import annotations

import re
import subprocess
import sys

from bench import report

MODULES = ["mailwarden", "mailwarden.checks.diagnoses", "mailwarden.checks", "mailwarden.alerts.messages",
           "mailwarden.monitor.cli", "mailwarden.monitor.web.app"]
HEAVY = ["msal", "httpx", "sqlalchemy", "apprise", "starlette", "jinja2"]
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def measure(module: str) -> tuple[float, int, list[str]]:
    """(milliseconds, modules loaded, heavy libraries loaded) for one import in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True,
                         text=True, check=True).stderr
    rows = [m for m in (_LINE.match(line) for line in out.splitlines()) if m]
    top = sum(int(m.group(2)) for m in rows if len(m.group(3)) == 1)  # cumulative µs of the top-level imports
    names = {m.group(4) for m in rows}
    return top / 1000, len(names), [h for h in HEAVY if h in names]


def main() -> None:
    print(f"speed reference: {report.speed_reference()}")
    print(f"{'module':32} {'ms (best of 5)':>15} {'modules':>8}  heavy libraries loaded")
    for module in MODULES:
        runs = [measure(module) for _ in range(5)]
        best = min(runs, key=lambda r: r[0])
        print(f"{module:32} {best[0]:15.1f} {best[1]:8d}  {', '.join(best[2]) or '-'}")


if __name__ == "__main__":
    main()
