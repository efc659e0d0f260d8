"""IMAP4rev1 over implicit TLS, answering as Exchange Online's IMAP4 service does."""

from __future__ import annotations

import re

from .base import Conn
from .model import IMAP_CONNECTIONS, Mailbox, Message, in_use, spend
from .xoauth2 import check_login

GREETING = ("* OK The Microsoft Exchange IMAP4 service is ready. "
            "[UwBOADQAUABSADAANQAwADEAQwBBADAAMAAwADEALgBuAGEAbQBwAHIAZAAwADUALgBwAHIAbwBkAA==]")
CAPS = "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+"
INVALID_STATE = "BAD Command received in Invalid state."
NOT_CONNECTED = "BAD User is authenticated but not connected."
# After the second "not connected" reply Exchange ends the session (M365_FACTS.md, "SASL XOAUTH2")
BYE_CLOSED = "* BYE Connection closed. 14"
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_SEARCH_WORD = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')
_ITEM = re.compile(r"BODY\.PEEK\[[^\]]*\]|BODY\[[^\]]*\]|[A-Z0-9.]+", re.I)


def internaldate(m: Message) -> str:
    t = m.received
    return f'"{t.day:02d}-{MONTHS[t.month - 1]}-{t.year} {t.hour:02d}:{t.minute:02d}:{t.second:02d} +0000"'


def flags(m: Message) -> str:
    return "(" + " ".join(f for f, on in (("\\Seen", m.seen), ("\\Deleted", m.deleted)) if on) + ")"


def parse_set(spec: str, top: int) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        a, _, b = part.partition(":")
        lo = top if a == "*" else int(a)
        hi = lo if not b else (top if b == "*" else int(b))
        lo, hi = min(lo, hi), max(lo, hi)
        out.extend(range(lo, hi + 1))
    return out


def unquote(s: str) -> str:
    s = s.strip()
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] == '"' else s


class Session:
    def __init__(self, servers, conn: Conn):
        self.servers, self.conn, self.state = servers, conn, servers.state
        self.login = None
        self.mailbox: Mailbox | None = None
        self.readonly = True
        self.selected = False
        self.not_connected = False  # logged in, but the mailbox cannot be opened (for this session)
        self.not_connected_replies = 0
        self.session_key: tuple[str, str] | None = None

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self.session_key is not None:
                self.state.session_closed(self.session_key)

    async def _refuse_unconnected(self, tag: str) -> bool:
        """Every command of a session that is authenticated but not connected gets the BAD reply; the second
        one is followed by BYE and the connection closes. True: the session is over."""
        self.not_connected_replies += 1
        if self.not_connected_replies >= 2:
            await self.conn.send(f"{tag} {NOT_CONNECTED}", BYE_CLOSED)
            return True
        await self.conn.send(f"{tag} {NOT_CONNECTED}")
        return False

    async def _throttled(self, tag: str) -> bool:
        """The principal's budget on this mailbox is spent: Exchange answers with its suggested back-off and ends
        the session (M365_FACTS.md, "Throttling and transient replies"). True: the session is over."""
        who = self.login.principal
        wait = spend(self.state, who.name, self.login.mailbox)
        if wait is None:
            return False
        ms = int(wait * 1000)
        # captured as BAD with BYE (email-oauth2-proxy#191) and as NO without (imapsync#198, imap_tools#135)
        await self.conn.send(f"{tag} BAD Request is throttled. Suggested Backoff Time: {ms} milliseconds", BYE_CLOSED)
        return True

    async def _run(self) -> None:
        c = self.conn
        await c.send(GREETING)
        while True:
            line = await c.readline()
            if line is None:
                return
            tag, _, rest = line.partition(" ")
            cmd, _, args = rest.partition(" ")
            cmd = cmd.upper()
            if not tag or not cmd:
                await c.send(f"{tag or '*'} BAD Command Error. 12")
                continue
            if cmd == "UID":
                sub, _, args = args.partition(" ")
                cmd = "UID " + sub.upper()
            c.count(cmd)
            if cmd == "LOGOUT":
                await c.send("* BYE Microsoft Exchange Server IMAP4 server signing off.", f"{tag} OK LOGOUT completed.")
                return
            if self.login is not None and cmd not in ("CAPABILITY", "NOOP", "ID"):
                if self._unconnected():
                    if await self._refuse_unconnected(tag):
                        return
                    continue
                if await self._throttled(tag):
                    return
            handler = getattr(self, "do_" + cmd.replace(" ", "_"), None)
            if handler is None:
                await c.send(f"{tag} BAD Command Error. 12")
                continue
            try:
                await handler(tag, args)
            except (ValueError, IndexError):
                await c.send(f"{tag} BAD Command Argument Error. 11")

    # -- any state ------------------------------------------------------------------------------
    async def do_CAPABILITY(self, tag, args):
        await self.conn.send(f"* CAPABILITY {CAPS}", f"{tag} OK CAPABILITY completed.")

    async def do_NOOP(self, tag, args):
        await self.conn.send(f"{tag} OK NOOP completed.")

    async def do_ID(self, tag, args):
        await self.conn.send("* ID NIL", f"{tag} OK ID completed.")

    # -- not authenticated ------------------------------------------------------------------------
    async def do_LOGIN(self, tag, args):
        self.state.count_mail("imap", "auth_failed")
        await self.conn.send(f"{tag} NO LOGIN failed.")

    async def do_AUTHENTICATE(self, tag, args):
        c = self.conn
        if self.login is not None:
            return await c.send(f"{tag} {INVALID_STATE}")
        mech, _, initial = args.partition(" ")
        if mech.upper() != "XOAUTH2":
            self.state.count_mail("imap", "auth_failed")
            return await c.send(f"{tag} NO AUTHENTICATE failed.")
        blob = initial.strip()
        if not blob:
            await c.send("+ ")
            blob = (await c.readline() or "").strip()
            if blob == "*":
                return await c.send(f"{tag} BAD AUTHENTICATE aborted.")
        login = check_login(self.state, self.servers.signer, blob, "imap")
        if not login.ok:
            self.state.count_mail("imap", "auth_failed")
            return await c.send(f"{tag} NO AUTHENTICATE failed.")
        self.state.count_mail("imap", "auth_ok")
        self.login = login
        c.mailbox_key = login.mailbox.address
        with self.state.lock:
            # about 20 connections per mailbox: the one over the limit logs in and is not connected
            self.not_connected = in_use(self.state, "imap", login.mailbox) >= IMAP_CONNECTIONS
            self.session_key = ("imap", login.mailbox.address.lower())
            self.state.session_opened(self.session_key)  # the state's lock is re-entrant: one step with the test
        await c.send(f"{tag} OK AUTHENTICATE completed.")

    def _unconnected(self) -> bool:
        """Evaluated at each command: a permission granted or removed meanwhile applies to an open session."""
        with self.state.lock:
            mb, who = self.login.mailbox, self.login.principal
            return self.not_connected or mb.not_connected or not who.has_full_access(mb)

    # -- authenticated ----------------------------------------------------------------------------
    async def _open(self, tag, args, readonly: bool):
        c = self.conn
        if self.login is None:
            return await c.send(f"{tag} {INVALID_STATE}")
        if unquote(args).upper() != "INBOX":
            self.selected = False
            return await c.send(f"{tag} NO {'EXAMINE' if readonly else 'SELECT'} failed.")
        mb = self.login.mailbox
        with self.state.lock:
            msgs = list(mb.messages)
            unseen = next((i + 1 for i, m in enumerate(msgs) if not m.seen), None)
            uidnext, uidvalidity = mb.next_uid, mb.uidvalidity
        self.mailbox, self.readonly, self.selected = mb, readonly, True
        lines = [f"* {len(msgs)} EXISTS", "* 0 RECENT",
                 "* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $MDNSent)",
                 "* OK [PERMANENTFLAGS ()] Permanent flags" if readonly else
                 "* OK [PERMANENTFLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $MDNSent)] Permanent flags"]
        if unseen:
            lines.append(f"* OK [UNSEEN {unseen}] Is the first unseen message")
        lines += [f"* OK [UIDVALIDITY {uidvalidity}] UIDVALIDITY value",
                  f"* OK [UIDNEXT {uidnext}] The next unique identifier value"]
        mode, verb = ("READ-ONLY", "EXAMINE") if readonly else ("READ-WRITE", "SELECT")
        await c.send(*lines, f"{tag} OK [{mode}] {verb} completed.")

    async def do_EXAMINE(self, tag, args):
        await self._open(tag, args, True)

    async def do_SELECT(self, tag, args):
        await self._open(tag, args, False)

    async def do_LIST(self, tag, args):
        if self.login is None:
            return await self.conn.send(f"{tag} {INVALID_STATE}")
        await self.conn.send('* LIST (\\Marked \\HasNoChildren) "/" INBOX', f"{tag} OK LIST completed.")

    async def do_STATUS(self, tag, args):
        if self.login is None:
            return await self.conn.send(f"{tag} {INVALID_STATE}")
        with self.state.lock:
            mb = self.login.mailbox
            n, unseen = len(mb.messages), sum(1 for m in mb.messages if not m.seen)
        await self.conn.send(f"* STATUS INBOX (MESSAGES {n} UNSEEN {unseen} UIDNEXT {mb.next_uid} "
                             f"UIDVALIDITY {mb.uidvalidity})", f"{tag} OK STATUS completed.")

    # -- selected ---------------------------------------------------------------------------------
    def _msgs(self) -> list[Message]:
        with self.state.lock:
            return list(self.mailbox.messages) if self.mailbox else []

    async def _need_selected(self, tag) -> bool:
        if not self.selected:
            await self.conn.send(f"{tag} {INVALID_STATE}")
            return False
        return True

    async def _search(self, tag, args, uid: bool):
        if not await self._need_selected(tag):
            return
        tests = {"ALL": lambda m: True, "UNSEEN": lambda m: not m.seen, "SEEN": lambda m: m.seen,
                 "DELETED": lambda m: m.deleted, "UNDELETED": lambda m: not m.deleted}
        # SUBJECT <string>: the messages whose Subject contains it, case-insensitive (RFC 3501 6.4.4; Exchange and
        # Dovecot take a quoted string or an atom)
        words = [q if q or not a else a for q, a in _SEARCH_WORD.findall(args)]
        crit: list = []
        while words:
            word = words.pop(0)
            if word.upper() == "SUBJECT" and words:
                needle = words.pop(0).lower()
                crit.append(lambda m, needle=needle: needle in m.subject.lower())
            elif word.upper() in tests:
                crit.append(tests[word.upper()])
            else:
                crit = []
                break
        if not crit:
            return await self.conn.send(f"{tag} BAD Command Argument Error. 11")
        hits = [str(m.uid if uid else i + 1) for i, m in enumerate(self._msgs()) if all(c(m) for c in crit)]
        await self.conn.send("* SEARCH" + "".join(" " + h for h in hits), f"{tag} OK SEARCH completed.")

    async def do_SEARCH(self, tag, args):
        await self._search(tag, args, False)

    async def do_UID_SEARCH(self, tag, args):
        await self._search(tag, args, True)

    def _select_msgs(self, spec: str, uid: bool) -> list[tuple[int, Message]]:
        msgs = self._msgs()
        if uid:
            top = msgs[-1].uid if msgs else 0
            wanted = set(parse_set(spec, top))
            return [(i + 1, m) for i, m in enumerate(msgs) if m.uid in wanted]
        return [(n, msgs[n - 1]) for n in parse_set(spec, len(msgs)) if 1 <= n <= len(msgs)]

    async def _fetch(self, tag, args, uid: bool):
        if not await self._need_selected(tag):
            return
        spec, _, items_s = args.partition(" ")
        items_s = items_s.strip()
        if items_s.startswith("(") and items_s.endswith(")"):
            items_s = items_s[1:-1]
        macros = {"ALL": "FLAGS INTERNALDATE RFC822.SIZE", "FAST": "FLAGS INTERNALDATE RFC822.SIZE",
                  "FULL": "FLAGS INTERNALDATE RFC822.SIZE"}
        items = [i.upper() for i in _ITEM.findall(macros.get(items_s.upper(), items_s))]
        if not items:
            raise ValueError("no items")
        if uid and "UID" not in items:
            items.insert(0, "UID")
        out: list[str | bytes] = []
        for n, m in self._select_msgs(spec, uid):
            parts: list[str | bytes] = []
            for it in items:
                if it == "UID":
                    parts.append(f"UID {m.uid}")
                elif it == "FLAGS":
                    parts.append(f"FLAGS {flags(m)}")
                elif it == "INTERNALDATE":
                    parts.append(f"INTERNALDATE {internaldate(m)}")
                elif it == "RFC822.SIZE":
                    parts.append(f"RFC822.SIZE {len(m.rfc822())}")
                elif it.startswith(("BODY[", "BODY.PEEK[", "RFC822")):
                    data = m.rfc822()
                    section = it[it.find("[") + 1:-1] if "[" in it else ""
                    if section == "HEADER" or it == "RFC822.HEADER":
                        data = data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                    elif section.upper().startswith("HEADER.FIELDS ("):  # only the named header fields (RFC 3501)
                        names = {n.lower().encode() for n in section[section.find("(") + 1:-1].split()}
                        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
                        data = b"".join(ln + b"\r\n" for ln in head if ln.split(b":", 1)[0].lower() in names)
                        data += b"\r\n"
                    name = it.replace(".PEEK", "")
                    parts.append(f"{name} {{{len(data)}}}\r\n".encode() + data)
                    if not it.startswith("BODY.PEEK") and it != "RFC822.HEADER" and not self.readonly:
                        with self.state.lock:
                            m.seen = True
                else:
                    raise ValueError(it)
            line = f"* {n} FETCH (".encode()
            for k, p in enumerate(parts):
                line += (b" " if k else b"") + (p if isinstance(p, bytes) else p.encode())
            out.append(line + b")\r\n")
        await self.conn.send(*out, f"{tag} OK FETCH completed.")

    async def do_FETCH(self, tag, args):
        await self._fetch(tag, args, False)

    async def do_UID_FETCH(self, tag, args):
        await self._fetch(tag, args, True)

    async def _store(self, tag, args, uid: bool):
        if not await self._need_selected(tag):
            return
        if self.readonly:  # EXAMINE: nothing may change
            return await self.conn.send(f"{tag} NO Command received in Invalid state.")
        spec, what, flag_s = args.split(" ", 2)
        add = not what.startswith("-")
        wanted = flag_s.strip("() ").upper().split()
        out = []
        with self.state.lock:
            for n, m in self._select_msgs(spec, uid):
                if "\\SEEN" in wanted:
                    m.seen = add
                if "\\DELETED" in wanted:
                    m.deleted = add
                if ".SILENT" not in what.upper():
                    out.append(f"* {n} FETCH (FLAGS {flags(m)}{f' UID {m.uid}' if uid else ''})")
        await self.conn.send(*out, f"{tag} OK STORE completed.")

    async def do_STORE(self, tag, args):
        await self._store(tag, args, False)

    async def do_UID_STORE(self, tag, args):
        await self._store(tag, args, True)

    def _expunge(self) -> list[str]:
        out = []
        with self.state.lock:
            msgs = self.mailbox.messages
            for i in range(len(msgs) - 1, -1, -1):
                if msgs[i].deleted:
                    del msgs[i]
                    out.append(f"* {i + 1} EXPUNGE")
        return out

    async def do_EXPUNGE(self, tag, args):
        if not await self._need_selected(tag):
            return
        if self.readonly:
            return await self.conn.send(f"{tag} NO Command received in Invalid state.")
        await self.conn.send(*self._expunge(), f"{tag} OK EXPUNGE completed.")

    async def do_CLOSE(self, tag, args):
        if not await self._need_selected(tag):
            return
        if not self.readonly:
            self._expunge()
        self.selected, self.mailbox = False, None
        await self.conn.send(f"{tag} OK CLOSE completed.")

    async def do_UNSELECT(self, tag, args):
        if not await self._need_selected(tag):
            return
        self.selected, self.mailbox = False, None
        await self.conn.send(f"{tag} OK UNSELECT completed.")

    async def do_CHECK(self, tag, args):
        if await self._need_selected(tag):
            await self.conn.send(f"{tag} OK CHECK completed.")


async def serve(servers, conn: Conn) -> None:
    await Session(servers, conn).run()
