"""`mailwarden report` (the static status file) and `mailwarden web hash-password`."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mailwarden.errors import MailwardenError
from mailwarden.monitor.cli import EXIT_UNKNOWN, ConfigOpt, app, fail, load_config

web_app = typer.Typer(no_args_is_help=True, help="The status web app.")
app.add_typer(web_app, name="web")


@app.command()
def report(config: ConfigOpt = None,
           output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write ('-': stdout).")]
           = Path("status.html")) -> None:
    """Write the status report: one self-contained HTML file (inline CSS and SVG, no external request), the
    dashboard's overview and every integration's details, fit for e-mail or a file share.

    Exit 0 written, 3 config or database error, the file cannot be written, or a usage error.
    """
    from mailwarden.monitor.db import open_store
    from mailwarden.monitor.web.report import render_report

    cfg = load_config(config, EXIT_UNKNOWN)
    try:
        store = open_store(cfg.database_url())
    except MailwardenError as exc:
        raise fail(exc, EXIT_UNKNOWN) from None
    try:
        html = render_report(cfg, store)
    except MailwardenError as exc:
        raise fail(exc, EXIT_UNKNOWN) from None
    finally:
        store.close()
    if str(output) == "-":
        sys.stdout.write(html)
        return
    try:
        tmp = output.with_name(f".{output.name}.tmp")
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, output)  # a reader on the file share never sees half a report
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror}", EXIT_UNKNOWN) from None
    typer.echo(f"report written to {output}")


@web_app.command("hash-password")
def hash_password(stdin: Annotated[bool, typer.Option("--stdin", help="Read the password from standard input.")]
                  = False) -> None:
    """Print a scrypt hash of a password for `web.password_hash` (the password itself is never stored).

    Exit 0, 1 when the password is empty or short or the two entries differ, 3 on a usage error.
    """
    from mailwarden.monitor.web.auth import hash_password as make

    if stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Admin password: ")
        if getpass.getpass("Again: ") != password:
            raise fail("the two entries differ", 1)
    if len(password) < 8:
        raise fail("use a password of at least 8 characters", 1)
    typer.echo(make(password))
