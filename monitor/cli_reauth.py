"""`mailwarden reauth NAME`: store a delegated refresh token, headless."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from mailwarden.errors import MailwardenError
from mailwarden.monitor.cli import EXIT_UNKNOWN, ConfigOpt, app, fail, load_config


@app.command()
def reauth(
    name: Annotated[str, typer.Argument(help="The integration to authorise.")],
    config: ConfigOpt = None,
    import_file: Annotated[Path | None, typer.Option(
        "--import", help="Store a refresh token obtained elsewhere: a file holding the token, or JSON with "
                         "a refresh_token field. One issued to a public client (device code) is stored as such "
                         "and refreshed without the app's secret.")] = None,
    redirect_uri: Annotated[str | None, typer.Option(
        help="Redirect URI registered on the app (default: web.base_url + /auth/callback).")] = None,
    device: Annotated[bool, typer.Option(
        "--device-code", help="Sign in with a device code instead (only for apps with public_client: true).")]
    = False,
) -> None:
    """Authorise a delegated integration as its configured account and store the refresh token (encrypted).

    Prints a sign-in URL: open it (a private window avoids signing in as yourself), sign in as the
    configured account, then paste the whole address the browser was sent back to. Refuses another
    account or missing scopes, keeping the stored token. Who the account is, Entra ID says through the
    tenant's monitor app (User.Read.All): its UPN, mail or a proxy address, and the same object id. Without
    that permission the object id of the last accepted sign-in, else the sign-in name and the ID token's
    email, are compared, and the output says which.

    Exit 0 stored; 1 refused, nothing stored: the wrong account, missing scopes, a token Entra ID refuses
    (AADSTS), a file that holds no refresh token, a login host that cannot be reached or an unknown tenant;
    3 config/database error, an unknown integration, a file that cannot be read, or a usage error.
    """
    from mailwarden.monitor import reauth as flow
    from mailwarden.monitor.runtime import open_runtime
    from mailwarden.monitor.signins import open_reauth_window

    cfg = load_config(config, EXIT_UNKNOWN)
    try:
        integ = cfg.integration(name)
    except KeyError:
        raise fail(f"no integration named {name!r} in the config", EXIT_UNKNOWN) from None
    imported = _read_token(import_file) if import_file is not None else None
    try:
        runtime = open_runtime(cfg)
    except MailwardenError as exc:
        raise fail(exc, EXIT_UNKNOWN) from None
    window = None
    try:
        if imported is None:  # a browser sign-in follows: its sign-in-log events are not the consuming system's
            window = open_reauth_window(runtime.store, cfg, integ, "cli", datetime.now(UTC))
        if imported is not None:
            result = flow.import_refresh_token(runtime.tokens, integ, imported)
        elif device:
            result = flow.device_code(runtime.tokens, integ,
                                      lambda text: typer.echo(f"Sign in as {integ.account}: {text}"))
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
        if window is not None:
            with contextlib.suppress(MailwardenError):
                runtime.store.signins.close_reauth_window(datetime.now(UTC), window_id=window)
        runtime.close()
    kind = " (public client: refreshed without the app's secret)" if result.details.get("public_client") else ""
    typer.echo(f"Stored a refresh token for {result.integration}{kind}, signed in as {result.account} "
               f"(scopes: {' '.join(result.scopes)}).\nIdentity: {result.details.get('identity')}.\n"
               f"Run 'mailwarden check -i {name}' to verify. "
               f"mailwarden's token is its own: if {integ.system or 'the consuming system'} also lost its "
               f"sign-in, re-authenticate it there as {integ.account} too.")


def _read_token(path: Path) -> str:
    """The refresh token in ``path``: the token itself, or JSON with a refresh_token field. A file that cannot be
    read is a bad argument (exit 3); one that holds no refresh token is refused (exit 1), nothing stored."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise fail(f"--import {path}: the file cannot be read ({exc.strerror}); nothing was stored", EXIT_UNKNOWN) \
            from None
    try:
        text = raw.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise _no_refresh_token(path, "is not a text file (not UTF-8)") from None
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _no_refresh_token(path, f"starts like JSON but is not valid JSON ({exc.msg}, line {exc.lineno})") \
                from None
        value = doc.get("refresh_token") if isinstance(doc, dict) else None
        if not isinstance(value, str) or not value.strip():
            fields = ", ".join(sorted(doc)) if isinstance(doc, dict) and doc else "none"
            raise _no_refresh_token(path, f"is JSON without a refresh_token (its fields: {fields})")
        text = value.strip()
    if not text:
        raise _no_refresh_token(path, "is empty")
    if text.count(".") == 2 and text.startswith("eyJ"):
        # Entra ID's refresh tokens are opaque; a signed JWT is an access or ID token, which ends within hours
        raise _no_refresh_token(path, "holds a JWT: an access or ID token, not a refresh token")
    if any(c.isspace() for c in text):
        raise _no_refresh_token(path, "holds text with spaces or line breaks, and a refresh token is one string "
                                      "without them")
    return text


def _no_refresh_token(path: Path, what: str) -> typer.Exit:
    return fail(f"--import {path} {what}, so there is no refresh token to store; nothing was stored. Put the "
                "refresh token alone in the file, or JSON with a refresh_token field (MSAL's token response), and "
                "run the command again [no_refresh_token]", 1)


token_key_app = typer.Typer(no_args_is_help=True, help="The token store's encryption key.")
app.add_typer(token_key_app, name="token-key")


@token_key_app.command("rotate")
def token_key_rotate(
    new_key: Annotated[str, typer.Option("--new", help="Reference to the new Fernet key: env:NAME or file:PATH.")],
    config: ConfigOpt = None,
) -> None:
    """Re-encrypt every stored token with a new key, in one transaction.

    Stop every mailwarden instance first, rotate, then point token_key in the config at the new key and
    start again. Exit 0 done, 3 when a key or the database is unusable, or on a usage error.
    """
    from mailwarden.monitor import config as config_mod
    from mailwarden.monitor.db import open_store
    from mailwarden.monitor.tokenstore import FINGERPRINT_KEY, TokenCipher, load_cipher, verify_fingerprint

    cfg = load_config(config, EXIT_UNKNOWN)
    try:
        old = load_cipher(cfg)
        new = TokenCipher(config_mod.resolve_ref(new_key, cfg.base_dir, what="--new"))
        store = open_store(cfg.database_url())
    except MailwardenError as exc:
        raise fail(exc, EXIT_UNKNOWN) from None
    try:
        verify_fingerprint(store, old)
        count = store.token_caches.rekey_token_caches(lambda blob: new.encrypt(old.decrypt(blob)), new.fingerprint,
                                                      FINGERPRINT_KEY)
    except MailwardenError as exc:
        raise fail(exc, EXIT_UNKNOWN) from None
    finally:
        store.close()
    typer.echo(f"re-encrypted {count} token cache(s) with key {new.fingerprint}; now set token_key to {new_key} "
               "in the config (every instance) and start mailwarden again")
