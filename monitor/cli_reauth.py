"""`mailwarden reauth NAME`: store a delegated refresh token, headless."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from monitor.cli import EXIT_UNKNOWN, ConfigOpt, app, fail, load_config
from monitor.errors import MailwardenError


@app.command()
def reauth(
    name: Annotated[str, typer.Argument(help="The integration to authorise.")],
    config: ConfigOpt = None,
    import_file: Annotated[Path | None, typer.Option(
        "--import", help="Store a refresh token obtained elsewhere: a file holding the token, or JSON with "
                         "a refresh_token field.")] = None,
    redirect_uri: Annotated[str | None, typer.Option(
        help="Redirect URI registered on the app (default: web.base_url + /auth/callback).")] = None,
) -> None:
    """Authorise a delegated integration as its configured account and store the refresh token (encrypted).

    Prints a sign-in URL: open it (a private window avoids signing in as yourself), sign in as the
    configured account, then paste the whole address the browser was sent back to. Refuses another
    account or missing scopes, keeping the stored token. Exit 0 stored, 1 refused, 3 config/database error.
    """
    from monitor import reauth as flow
    from monitor.runtime import open_runtime

    cfg = load_config(config, EXIT_UNKNOWN)
    try:
        integ = cfg.integration(name)
    except KeyError:
        raise fail(f"no integration named {name!r} in the config", EXIT_UNKNOWN) from None
    try:
        runtime = open_runtime(cfg)
    except MailwardenError as exc:
        raise fail(exc, EXIT_UNKNOWN) from None
    try:
        if import_file is not None:
            result = flow.import_refresh_token(runtime.tokens, integ, _read_token(import_file))
        else:
            uri = redirect_uri or cfg.web.base_url.rstrip("/") + "/auth/callback"
            started = flow.start(runtime.tokens, integ, uri)
            typer.echo(f"Sign in as {integ.account} (a private window avoids using your own session):\n")
            typer.echo(started["auth_uri"] + "\n")
            pasted = typer.prompt("Paste the address the browser was sent back to")
            result = flow.complete(runtime.tokens, integ, started, flow.parse_redirect(pasted))
    except flow.ReauthError as exc:
        raise fail(f"{exc.message()} [{exc.code}]", 1) from None
    except MailwardenError as exc:
        raise fail(exc, EXIT_UNKNOWN) from None
    finally:
        runtime.close()
    typer.echo(f"Stored a refresh token for {result.integration}, signed in as {result.account} "
               f"(scopes: {' '.join(result.scopes)}).\nRun 'mailwarden check -i {name}' to verify. "
               f"mailwarden's token is its own: if {integ.system or 'the consuming system'} also lost its "
               f"sign-in, re-authenticate it there as {integ.account} too.")


def _read_token(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise fail(f"{path}: cannot be read ({exc.strerror})", EXIT_UNKNOWN) from None
    if text.startswith("{"):
        try:
            text = str(json.loads(text)["refresh_token"])
        except (ValueError, KeyError):
            raise fail(f"{path}: JSON without a refresh_token field", EXIT_UNKNOWN) from None
    if not text:
        raise fail(f"{path}: empty", EXIT_UNKNOWN)
    return text
