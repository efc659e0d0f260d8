"""POP3 over implicit TLS, answering as Exchange Online's POP3 service does."""

from __future__ import annotations

from .base import Conn, counting_sessions
from .xoauth2 import check_login

GREETING = ("+OK The Microsoft Exchange POP3 service is ready. "
            "[UwBOADQAUABSADAANQAwADEAQwBBADAAMAAwADEALgBuAGEAbQBwAHIAZAAwADUALgBwAHIAbwBkAA==]")
AUTH_FAILED = "-ERR Authentication failure: unknown user name or bad password."
INVALID_STATE = "-ERR Command is not valid in this state."
OUT_OF_RANGE = "-ERR The specified message is out of range."
# Exchange refuses a command line over its limit and drops the connection; since 2025 a very long token's
# XOAUTH2 line (over about 4 KB of base64) is refused this way (M365_FACTS.md; getmail6#256)
MAX_COMMAND = 4096
COMMAND_TOO_LONG = "-ERR Protocol error. Connection is closed. 10"


async def serve(servers, conn: Conn) -> None:
    await counting_sessions(servers, conn, _serve)


async def _serve(servers, conn: Conn, sessions: list) -> None:
    state = servers.state
    login = None
    deleted: set[int] = set()  # uids marked by DELE in this session, removed at QUIT
    await conn.send(GREETING)

    def listing():
        with state.lock:
            return [(i + 1, m) for i, m in enumerate(login.mailbox.messages) if m.uid not in deleted]

    while True:
        line = await conn.readline()
        if line is None:
            return
        cmd, _, args = line.strip().partition(" ")
        cmd = cmd.upper()
        conn.count(cmd or "(empty)")
        if cmd == "QUIT":
            if login is not None and deleted:
                with state.lock:
                    login.mailbox.messages[:] = [m for m in login.mailbox.messages if m.uid not in deleted]
            await conn.send("+OK Microsoft Exchange Server POP3 server signing off.")
            return
        if cmd == "CAPA":
            await conn.send("+OK", "TOP", "UIDL", "SASL PLAIN XOAUTH2", "USER", ".")
        elif cmd == "NOOP":
            await conn.send("+OK" if login else INVALID_STATE)
        elif cmd in ("USER", "PASS"):
            if login is not None:
                await conn.send(INVALID_STATE)
            elif cmd == "USER":
                await conn.send("+OK")
            else:
                state.count_mail("pop", "auth_failed")
                await conn.send("-ERR Logon failure: unknown user name or bad password.")
        elif cmd == "AUTH":
            if login is not None:
                await conn.send(INVALID_STATE)
                continue
            mech, _, initial = args.partition(" ")
            if not mech:
                await conn.send("+OK", "PLAIN", "XOAUTH2", ".")
                continue
            if initial.strip():  # Exchange refuses the SASL initial response and drops the connection
                state.count_mail("pop", "auth_failed")
                await conn.send("-ERR Protocol error. Connection is closed. 10")
                return
            if mech.upper() != "XOAUTH2":
                state.count_mail("pop", "auth_failed")
                await conn.send(AUTH_FAILED)
                continue
            await conn.send("+ ")
            blob = (await conn.readline() or "").strip()
            if len(blob) > MAX_COMMAND:
                state.count_mail("pop", "auth_failed")
                await conn.send(COMMAND_TOO_LONG)
                return
            if blob == "*":
                await conn.send("-ERR Authentication canceled.")
                continue
            result = check_login(state, servers.signer, blob, "pop")
            if not result.ok:
                state.count_mail("pop", "auth_failed")
                await conn.send(AUTH_FAILED)
                continue
            state.count_mail("pop", "auth_ok")
            login = result
            conn.mailbox_key = result.mailbox.address
            if not sessions:
                sessions.append(("pop", result.mailbox.address.lower()))
                state.session_opened(sessions[0])
            await conn.send("+OK User successfully authenticated.")
        elif login is None:
            await conn.send(INVALID_STATE if cmd in ("STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET")
                            else "-ERR Protocol error. 14")
        elif cmd == "STAT":
            msgs = listing()
            await conn.send(f"+OK {len(msgs)} {sum(len(m.rfc822()) for _, m in msgs)}")
        elif cmd in ("LIST", "UIDL"):
            msgs = listing()
            value = (lambda m: len(m.rfc822())) if cmd == "LIST" else (lambda m: m.id[4:36])
            if args.strip():
                hit = next(((n, m) for n, m in msgs if str(n) == args.strip()), None)
                await conn.send(f"+OK {hit[0]} {value(hit[1])}" if hit else OUT_OF_RANGE)
            else:
                await conn.send(f"+OK {len(msgs)} messages", *(f"{n} {value(m)}" for n, m in msgs), ".")
        elif cmd in ("RETR", "TOP", "DELE"):
            num = args.split()[0] if args.split() else ""
            hit = next(((n, m) for n, m in listing() if str(n) == num), None)
            if hit is None:
                await conn.send(OUT_OF_RANGE)
            elif cmd == "DELE":
                deleted.add(hit[1].uid)
                await conn.send("+OK")
            else:
                data = hit[1].rfc822()
                if cmd == "TOP":
                    # RFC 1939: the headers, the blank line that ends them, then n lines of the body; Dovecot sends
                    # the blank line for TOP n 0 too (seen with tests/e2e/dovecot.py), and so does Exchange
                    words = args.split()
                    if len(words) != 2 or not words[1].isdigit():
                        await conn.send("-ERR Protocol error. 14")
                        continue
                    head, _, body = data.partition(b"\r\n\r\n")
                    lines = [*head.split(b"\r\n"), b"", *body.split(b"\r\n")[:int(words[1])]]
                else:
                    lines = data.rstrip(b"\r\n").split(b"\r\n")
                stuffed = b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines)
                await conn.send("+OK", stuffed, ".")
        elif cmd == "RSET":
            deleted.clear()
            await conn.send("+OK")
        else:
            await conn.send("-ERR Protocol error. 14")
