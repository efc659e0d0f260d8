"""SMTP submission with STARTTLS, answering as smtp.office365.com does."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import uuid

from ..state import utcnow
from .base import HOSTNAME, Conn, counting_sessions
from .model import SMTP_SENDER_THREADS, exchange_of, find_mailbox, in_use
from .xoauth2 import check_login

RECIPIENTS_PER_DAY = 10000  # Exchange Online's sending limit per mailbox (M365_FACTS.md)


def _stamp() -> str:
    """The diagnostic tail Exchange Online puts in brackets: the front-end host, the time, a request id."""
    now = dt.datetime.now(dt.UTC)
    when = f"{now.strftime('%Y-%m-%dT%H:%M:%S.')}{now.microsecond // 1000:03d}Z"
    return f"[{HOSTNAME} {when} {uuid.uuid4().hex[:16].upper()}]"

_ADDR = re.compile(r"<([^>]*)>")


def _addr(arg: str) -> str:
    m = _ADDR.search(arg)
    return (m.group(1) if m else arg.split(":", 1)[-1].split()[0] if arg.split(":", 1)[-1].split() else "").strip()


def ehlo_lines(tls: bool, authed: bool) -> list[str]:
    ext = ["SIZE 157286400", "PIPELINING", "DSN", "ENHANCEDSTATUSCODES"]
    if not tls:
        ext.append("STARTTLS")
    elif not authed:
        ext.append("AUTH LOGIN XOAUTH2")
    ext += ["8BITMIME", "BINARYMIME", "CHUNKING", "SMTPUTF8"]
    return [f"250-{HOSTNAME} Hello [127.0.0.1]"] + [f"250-{e}" for e in ext[:-1]] + [f"250 {ext[-1]}"]


async def serve(servers, conn: Conn) -> None:
    await counting_sessions(servers, conn, _serve)


async def _serve(servers, conn: Conn, sessions: list) -> None:
    state = servers.state
    tls = False
    login = None
    sender: str | None = None
    rcpts: list[str] = []
    now = dt.datetime.now(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    await conn.send(f"220 {HOSTNAME} Microsoft ESMTP MAIL Service ready at {now}")
    while True:
        line = await conn.readline()
        if line is None:
            return
        cmd, _, args = line.strip().partition(" ")
        cmd = cmd.upper()
        conn.count(cmd or "(empty)")
        if cmd in ("EHLO", "HELO"):
            sender, rcpts = None, []
            await conn.send(*(ehlo_lines(tls, login is not None) if cmd == "EHLO"
                              else [f"250 {HOSTNAME} Hello [127.0.0.1]"]))
        elif cmd == "QUIT":
            await conn.send("221 2.0.0 Service closing transmission channel")
            return
        elif cmd == "NOOP":
            await conn.send("250 2.0.0 OK")
        elif cmd == "RSET":
            sender, rcpts = None, []
            await conn.send("250 2.0.0 Resetting")
        elif cmd == "STARTTLS":
            if tls:
                await conn.send("503 5.5.2 Send hello first")
                continue
            await conn.send("220 2.0.0 SMTP server ready")
            await conn.start_tls(servers.ssl)
            tls = True
        elif cmd == "AUTH":
            mech, _, initial = args.partition(" ")
            if not tls or mech.upper() not in ("XOAUTH2", "LOGIN"):
                await conn.send(f"504 5.7.4 Unrecognized authentication type [{HOSTNAME}]")
                continue
            if login is not None:
                await conn.send("503 5.5.2 Already authenticated")
                continue
            if mech.upper() == "LOGIN":  # basic authentication is off in this sandbox (as captured: mailR#107)
                state.count_mail("smtp", "auth_failed")
                await conn.send("535 5.7.139 Authentication unsuccessful, basic authentication is disabled. "
                                f"[{HOSTNAME}]")
                continue
            blob = initial.strip()
            if not blob:
                await conn.send("334 ")
                blob = (await conn.readline() or "").strip()
                if blob == "*":
                    await conn.send("501 5.7.0 Authentication aborted")
                    continue
            if state.incident("exchange") is not None:
                # captured at AUTH as "421 4.3.2 Service not active" (MailKit#1106); the connection ends
                await conn.send(f"421 4.3.2 Service not active [{HOSTNAME}]")
                return
            result = check_login(state, servers.signer, blob, "smtp")
            if not result.ok:
                state.count_mail("smtp", "auth_failed")
                if result.smtp_disabled:
                    await conn.send("535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled "
                                    f"for the {result.smtp_disabled}. Visit https://aka.ms/smtp_auth_disabled for "
                                    f"more information. {_stamp()}")
                else:
                    await conn.send(f"535 5.7.3 Authentication unsuccessful {_stamp()}")
                continue
            state.count_mail("smtp", "auth_ok")
            login = result
            conn.mailbox_key = result.mailbox.address
            session_key = ("smtp", result.mailbox.address.lower())
            state.session_opened(session_key)
            sessions.append(session_key)
            await conn.send("235 2.7.0 Authentication successful")
        elif cmd == "MAIL":
            if login is None:
                await conn.send(f"530 5.7.57 Client not authenticated to send mail. [{HOSTNAME}]")
            elif sender is not None:
                await conn.send("503 5.5.1 Sender already specified")
            else:
                sender = _addr(args)
                await conn.send("250 2.1.0 Sender OK")
        elif cmd == "RCPT":
            if login is None:
                await conn.send(f"530 5.7.57 Client not authenticated to send mail. [{HOSTNAME}]")
            elif sender is None:
                await conn.send("503 5.5.1 Need mail command")
            else:
                rcpts.append(_addr(args))
                await conn.send("250 2.1.5 Recipient OK")
        elif cmd == "DATA":
            if login is None:
                await conn.send(f"530 5.7.57 Client not authenticated to send mail. [{HOSTNAME}]")
                continue
            if sender is None or not rcpts:
                await conn.send("503 5.5.1 Need rcpt command")
                continue
            await conn.send("354 Start mail input; end with <CRLF>.<CRLF>")
            lines = []
            while True:
                ln = await conn.readline()
                if ln is None:
                    return
                if ln == ".":
                    break
                lines.append(ln[1:] if ln.startswith(".") else ln)
            await conn.send(submit(state, login, sender, rcpts, "\r\n".join(lines)))
            sender, rcpts = None, []
        else:
            await conn.send(f"500 5.3.3 Unrecognized command '{cmd}'")


def submit(state, login, sender: str, rcpts: list[str], data: str) -> str:
    """What Exchange decides when the message is submitted (end of DATA): the concurrent-submission limit, the
    sending quota, an outbound spam block, Send As; then delivery into the recipients' mailboxes in the sandbox."""
    with state.lock:
        if in_use(state, "smtp", login.mailbox) > SMTP_SENDER_THREADS:
            # "Up to three concurrent connections" (Microsoft's SMTP submission page; fastapi-mail#75)
            return ("432 4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for "
                    f"more information. [Hostname={HOSTNAME}]")
        day = dt.timedelta(days=1)
        sent_key = f"sent:{login.mailbox.address.lower()}"
        if state.count_in_window(sent_key, day, add=False) + len(rcpts) > RECIPIENTS_PER_DAY:
            return ("554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process "
                    "message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message. "
                    f"[Hostname={HOSTNAME}]")
        blocked = exchange_of(state, login.mailbox.tenant_id).outbound_blocked
        if blocked == "tenant":  # seen only in NDRs; which SMTP reply carries it is not known (see README)
            return "550 5.7.705 Access denied, tenant has exceeded threshold"
        if blocked == "ip":
            return ("550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP. For more "
                    f"information please go to http://go.microsoft.com/fwlink/?LinkId=526653 AS(7171) [{HOSTNAME}]")
        from_mb = find_mailbox(state, sender)
        if not login.principal.may_send_as(from_mb, sender, login.mailbox):
            return (f"554 5.2.252 SendAsDenied; {login.address} not allowed to send as {sender}; "
                    "STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to "
                    "process message due to a permanent exception with message [BeginDiagnosticData]Cannot "
                    f"submit message. 0.35250:0E000000, 1.36674:0A000000 [Hostname={HOSTNAME}]")
        msg = email.message_from_string(data, policy=email.policy.default)
        subject = str(msg.get("Subject", "(no subject)"))
        body = msg.get_body(("plain",)) if msg.is_multipart() else msg
        text = body.get_content() if body is not None else ""
        for _ in rcpts:
            state.count_in_window(sent_key, day)
        for rcpt in rcpts:
            mb = find_mailbox(state, rcpt)
            if mb is not None and not mb.delivers_from(sender):
                mb = None  # quarantined: accepted, never delivered
            if mb is not None:
                mb.add_message(subject=subject, sender=sender, received=utcnow(), to=rcpts, body=str(text))
            state.record_delivery("smtp", sender, rcpt, subject, mb is not None)
    qid = uuid.uuid4().hex.upper()[:24]
    return f"250 2.0.0 OK <{qid}@{HOSTNAME}> [Hostname={HOSTNAME}]"
