"""Issue 15: the diagnosis catalog is plain data: importing it loads no protocol library, no HTTP or identity
library and nothing of the layers above the checks (it took about 1.3 s and loaded MSAL, httpx and seven monitor
modules). Behaviour, not time: the modules a fresh interpreter has loaded afterwards."""

import subprocess
import sys

HEAVY = ("msal", "httpx", "requests", "msgraph", "imaplib", "smtplib", "mailwarden.monitor", "mailwarden.alerts",
         "sqlalchemy", "jinja2")


def test_importing_the_catalog_loads_nothing_heavy():
    code = ("import sys, mailwarden.checks.diagnoses, mailwarden.checks;"
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_registry_makes_each_check_on_first_use():
    from mailwarden.checks import CHECKS, REGISTRY

    assert list(REGISTRY) == list(CHECKS) and "imap" in REGISTRY and "nosuch" not in REGISTRY
    assert all(REGISTRY[kind].kind == kind for kind in REGISTRY)
    assert REGISTRY["pop"] is REGISTRY["pop"]
