"""What the pages, the report and the API show, read from the store: latest states, hourly rollups,
incidents, credentials. One place, so the HTML and the JSON never disagree. Never a secret: credentials
are metadata (name, keyId, hint, expiry); summaries were redacted before they were stored.

Availability (every page, the report, the API, /metrics) is one figure: the share of the time in which all of an
integration's checks were good, read from the hourly integration rollups (``monitor.db_history``) over the
windows of ``svg.window_starts``. Day counts are ``checks.days``'. Statuses are the README's words.

The overview reads check states and rollups only; raw results are read for one integration's page.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from markupsafe import Markup, escape

from mailwarden import days as expiry
from mailwarden.checks import TOKEN_KIND, diagnoses
from mailwarden.checks.base import Outcome, Status
from mailwarden.checks.facts import facts
from mailwarden.monitor.config import Config
from mailwarden.monitor.db_alerts import attempt_outcome  # noqa: F401 - the templates read it (views.attempt_outcome)
from mailwarden.monitor.db_history import percent
from mailwarden.monitor.output import result_json
from mailwarden.monitor.tokens import token_key
from mailwarden.monitor.web import svg
from mailwarden.redact import redact

pct_text = svg.pct_text  # the templates write availability as views.pct_text

RANK = {"fail": 0, "error": 1, "blocked": 2, "warn": 3, "pending": 4, "ok": 5, "paused": 6}
BAD = ("fail", "error", "blocked")
# the overview's and the API's status filter: a status, "stale", or "problem" (anything but ok and paused)
STATUS_FILTERS = ("problem", "fail", "error", "blocked", "warn", "ok", "pending", "paused", "stale")
EXPIRY_WINDOW_DAYS = 90
# One vocabulary on every page and in the report: the README's words, each shown as itself with its meaning on
# hover ("new", the state machine's word for a check without a state yet, is shown as "pending").
MEANING = {"ok": "every step worked", "warn": "works, but needs attention soon",
           "fail": "the service answered and refused", "error": "no answer, so nothing is known",
           "blocked": "not run, because a check it depends on failed", "pending": "no result yet",
           "paused": "paused in the config", "stale": "no new result for more than twice the check interval"}
LABEL = {status: status for status in MEANING} | {"new": "pending"}
FILTER_LABEL = {"problem": "not ok"}


def iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z") if t else None


def absolute(t: datetime) -> str:
    """A time as the report writes it: "2026-12-02 14:03 UTC"."""
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def ago(t: datetime | None, now: datetime) -> str:
    if t is None:
        return "never"
    s = int((now - t).total_seconds())
    future = s < 0
    s = abs(s)
    text = (f"{s} s" if s < 90 else f"{s // 60} min" if s < 5400 else f"{s // 3600} h" if s < 172800
            else f"{s // 86400} days")
    return f"in {text}" if future else f"{text} ago"


# -- fragments of the overview's and the report's rows: plain functions returning escaped Markup, not Jinja
# macros (a macro call per cell was most of the overview's render at 1,000 integrations, bench/) -------------
@lru_cache(maxsize=256)
def chip(status: str, text: str | None = None) -> Markup:
    word = LABEL.get(status, status)
    return Markup(f'<span class="chip s-{escape(status)}" title="{escape(MEANING.get(word, word))}">'  # noqa: S704
                  f'{escape(text or word)}</span>')


@lru_cache(maxsize=4096)
def _check_chip(check: str, status: str, title: str | None) -> str:
    tip = f"{check}: {LABEL.get(status, status)}" + (f" — {title}" if title else "")
    return f'<span class="chip small s-{escape(status)}" title="{escape(tip)}">{escape(check)}</span>'


def check_chips(checks: list[CheckView]) -> Markup:
    """One chip per check, its status as the colour, the diagnosis' title in the tooltip."""
    return Markup(" ".join(_check_chip(c.check, c.status, c.title) for c in checks))  # noqa: S704 - escaped


@lru_cache(maxsize=4096)
def _day_runs(classes: tuple[str, ...]) -> str:
    """One ``<rect>`` per run of equal cells, filled with that class' bars (the patterns ``h-up``, ``h-part``,
    ``h-down``, ``h-none`` that _overview.html defines once): a day all up is one rect."""
    out, start = [], 0
    for i in range(1, len(classes) + 1):
        if i == len(classes) or classes[i] != classes[start]:
            x = f' x="{start * 4}"' if start else ""
            out.append(f'<rect{x} width="{(i - start) * 4}" height="16" fill="url(#h-{classes[start]})"/>')
            start = i
    return "".join(out)


def day_cells(starts: list[datetime], flat: list[int]) -> Markup:
    """The overview's 24 hourly availability cells (``svg.strip``'s bars, tooltip and name) in a few hundred bytes
    whatever the day was: runs of equal hours as one rect with a pattern fill, instead of a sub-path per cell (about
    900 bytes, half of each row's bytes at 1,000 integrations, bench/overview.py)."""
    cells = list(zip(starts, flat[0::2], flat[1::2], strict=True))
    classes = tuple(svg._cls(up, total) for _, up, total in cells)
    bad = [f"{t.hour:02d}:{t.minute:02d}" for (t, _, _), c in zip(cells, classes, strict=True) if c in ("part", "down")]
    empty = classes.count("none")
    tip = "availability, last 24 hours (UTC): " + (f"not fully up at {', '.join(bad)}" if bad else "no failure")
    if empty:
        tip += f"; {empty} of {len(cells)} without data"
    return Markup(f'<svg class="day" viewBox="0 0 96 16" role="img"><title>{tip}</title>'  # noqa: S704 - no text from outside
                  f'{_day_runs(classes)}</svg>')


def when(t: datetime | None, now: datetime, static: bool = False) -> Markup:
    """``<time>``: how long ago (or "never"), the exact UTC time in the tooltip; ``static`` (the report, read
    later than it was written): the exact UTC time itself."""
    if t is None:
        return Markup('<span class="muted">never</span>')
    if static:
        return Markup(f'<time datetime="{iso(t)}">{absolute(t)}</time>')  # noqa: S704 - no text from outside
    return Markup(f'<time datetime="{iso(t)}" title="{t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")} UTC">'  # noqa: S704
                  f'{ago(t, now)}</time>')


def diagnosis(code: str | None) -> Markup:
    """A diagnosis as people read it: its title with the code beside it, "Client secret expired (secret_expired)"."""
    if not code:
        return Markup("")
    return Markup(f"{escape(diagnoses.get(code).title)} (<code>{escape(code)}</code>)")  # noqa: S704 - escaped


# -- the commands inside a fix step, for the integration page's copyable code blocks ----------------------------
# A step is prose with commands in it: `mailwarden ...` between backticks, and PowerShell cmdlets (Verb-Noun) with
# their arguments ("Set-CASMailbox -Identity a@b -PopEnabled $true", "Get-CASMailbox -Identity a@b | Format-List
# PopEnabled"). A cmdlet only named in a sentence ("New-ServicePrincipal and Add-MailboxPermission") is no command,
# except the one that opens every Exchange Online session.
_TICKED = re.compile(r"`([^`\n]+)`")
_CMDLET = re.compile(r"(?<![\w$-])(?:Add|Connect|Disconnect|Format|Get|Grant|New|Remove|Revoke|Select|Set|Test|"
                     r"Update|Where)-[A-Z][A-Za-z]+(?![\w-])")
_PARAM = re.compile(r"-[A-Za-z]\w*(?![\w-])")
_VALUE = re.compile(r"<[^<>]*>|'[^']*'|\"[^\"]*\"|[^\s;,()|]+(?:,[^\s;,()|]+)*")
_SPACES = re.compile(r" +")
_PIPE = re.compile(r" *\| *")
_BARE_OK = ("Connect-ExchangeOnline",)
_TRAILING = ".,;:"


def _is_value(word: str) -> bool:
    """A parameter's value or a positional argument (an address, an id, a property list, $true, a quoted or
    <placeholder> value), not a word of the sentence around the command."""
    if word[:1] in "<'\"$":
        return True
    word = word.rstrip(_TRAILING)
    return bool(word) and (word[:1].isupper() or any(c in word for c in "@.$,_0123456789-"))


def _powershell(text: str, start: int) -> tuple[str, int]:
    """The command whose cmdlet starts at ``start``: the cmdlet, a positional argument, ``-Param [value]`` pairs,
    and ``| cmdlet ...``; it ends at the first word that is none of these. Returns (command, where it ends)."""
    parts: list[str] = []
    pos = start
    while (cmdlet := _CMDLET.match(text, pos)) is not None:
        parts.append(cmdlet.group(0))
        pos, first = cmdlet.end(), True
        while (gap := _SPACES.match(text, pos)) is not None:
            at = gap.end()
            if (param := _PARAM.match(text, at)) is not None:
                parts.append(param.group(0))
                pos, first = param.end(), False
                gap = _SPACES.match(text, pos)
                if gap is not None and not _PARAM.match(text, gap.end()):
                    value = _VALUE.match(text, gap.end())
                    if value is not None and _is_value(value.group(0)):
                        parts.append(value.group(0))
                        pos = value.end()
                continue
            value = _VALUE.match(text, at)
            if first and value is not None and _is_value(value.group(0)) and not _CMDLET.match(text, at):
                parts.append(value.group(0))
                pos, first = value.end(), False
                continue
            break
        pipe = _PIPE.match(text, pos)
        if pipe is None or not _CMDLET.match(text, pipe.end()):
            break
        parts.append("|")
        pos = pipe.end()
    return " ".join(parts).rstrip(_TRAILING), pos


@lru_cache(maxsize=1024)
def _commands(step: str) -> tuple[str, ...]:
    # between backticks: mailwarden's own commands (not the log lines or words a step quotes that way)
    found = [m.group(1).strip() for m in _TICKED.finditer(step)
             if m.group(1).startswith("mailwarden ") or _CMDLET.match(m.group(1))]
    prose = _TICKED.sub(lambda m: " " * len(m.group(0)), step)  # no cmdlet is looked for inside those
    pos = 0
    while (m := _CMDLET.search(prose, pos)) is not None:
        command, end = _powershell(prose, m.start())
        if " " in command or command in _BARE_OK:
            found.append(command)
        pos = max(end, m.end())
    return tuple(dict.fromkeys(found))


def commands(step: str) -> list[str]:
    """The commands of a fix step, in order, each once: the integration page shows each as a copyable code block
    under the step (whose text stays as written)."""
    return list(_commands(str(step)))


def expiry_words(cred: dict[str, Any]) -> str:
    """A credential row's day count in ``checks.days``' words: "10 days left", "expired 3 days ago"."""
    return expiry.words_for(cred["days_left"], cred["expired"])


def _integ_facts(cfg: Config, name: str, outcome: Outcome | None = None) -> dict[str, Any]:
    try:
        return facts(cfg, cfg.integration(name), outcome)
    except KeyError:  # in the store, no longer in the config
        return {"integration": name}


@dataclass(slots=True)
class CheckView:
    check: str
    status: str
    code: str | None
    title: str | None
    since: datetime | None
    last_checked_at: datetime | None
    last_ok_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {"check": self.check, "status": self.status, "code": self.code, "title": self.title,
                "since": iso(self.since), "last_checked_at": iso(self.last_checked_at),
                "last_ok_at": iso(self.last_ok_at)}


@dataclass(slots=True)
class IntegrationView:
    name: str
    tenant: str
    app: str
    system: str | None
    flow: str
    mailbox: str
    tags: list[str]
    paused: bool
    checks: list[CheckView]
    status: str = "pending"
    headline: CheckView | None = None
    fix_first: str | None = None
    # availability in percent per window key ("24h", "7d", "30d": those read), None where no time is known
    availability: dict[str, float | None] = field(default_factory=dict)
    uptime_24h: float | None = None  # deprecated (the API only, for one release): ok + warn results / all results
    day_starts: list[datetime] = field(default_factory=list)  # the 24 hours (one list shared by every view)
    cells_24h: list[int] = field(default_factory=list)  # available and known ms of each of those hours, flattened
    incidents: list[int] = field(default_factory=list)
    stale: bool = False  # a check's newest result is older than twice the integration's interval
    # from the config, for the overview's search (not in the API's JSON): the signing-in account (delegated), the
    # app's name in Entra ID and its client id
    account: str | None = None
    app_title: str | None = None
    client_id: str | None = None

    @property
    def hours_24h(self) -> list[tuple[datetime, int, int]]:
        """(hour, available ms, known ms) for the last 24 hours."""
        return list(zip(self.day_starts, self.cells_24h[0::2], self.cells_24h[1::2], strict=True))

    def as_json(self) -> dict[str, Any]:
        h = self.headline
        return {"name": self.name, "tenant": self.tenant, "app": self.app, "system": self.system,
                "flow": self.flow, "mailbox": self.mailbox, "tags": self.tags, "paused": self.paused,
                "status": self.status, "stale": self.stale, "code": h.code if h else None,
                "title": h.title if h else None, "since": iso(h.since) if h else None,
                "last_ok_at": iso(h.last_ok_at) if h else None, "fix_first": self.fix_first,
                **{f"availability_{key}": self.availability.get(key) for key, _, _, _ in svg.WINDOWS},
                "uptime_24h": self.uptime_24h, "open_incidents": self.incidents,
                "checks": [c.as_json() for c in self.checks]}


def _check_status(paused: bool, state: Any) -> str:
    if paused:
        return "paused"
    if state is None or not state.last_status:
        return "pending"
    return state.last_status


def _intervals(cfg: Config) -> dict[str, float]:
    return {i.name: float(cfg.threshold(i, "interval")) for i in cfg.integrations}


def integrations(cfg: Config, store: Any, now: datetime, *, tenant: str | None = None, tag: str | None = None,
                 status: str | None = None, name: str | None = None, incidents: list[Any] | None = None,
                 hourly: bool = True, windows: tuple[str, ...] = ("24h",),
                 deprecated_uptime: bool = False, fix: bool = True) -> list[IntegrationView]:
    """Every integration (or the one called ``name``), worst first (then by name), with the filters applied.
    ``incidents``: the open incidents, when the caller has read them already. ``hourly``: the 24 hourly
    availability cells (the overview's strip; the 24 h figure is then their sum); ``windows``: the availability
    figures to read ("24h", "7d", "30d"); ``deprecated_uptime``: the API's ``uptime_24h`` too; ``fix``: the first fix
    step of each failing one (``fix_first``: the API's; the overview's rows name the diagnosis instead, and rendering
    the failing rows' fix steps was a third of this function's time at 1,000 integrations, bench/overview.py)."""
    only = name
    now = now.astimezone(UTC)  # the stores' tzinfo: comparisons below take the fast path
    states: dict[str, dict[str, Any]] = defaultdict(dict)
    for st in store.history.state_rows(only):
        states[st.integration][st.check] = st
    starts = {w.key: w.start for w in svg.window_starts(now)}
    day = [starts["24h"] + timedelta(hours=i) for i in range(24)]  # the 24 cells: the current hour last
    hourly = hourly or only is not None
    cells: dict[str, list[int]] = {}  # per integration: available, known ms of each of the 24 hours, flattened
    if hourly:
        # per (integration, hour) from the rollups; placed by slot, each distinct hour looked up once
        slot_of = {h: i for i, h in enumerate(day)}
        seen: dict[datetime, int] = {}
        for integ, hour, up, down in store.history.availability_by_hour(day[0], integration=only):
            i = seen.get(hour)
            if i is None:
                i = seen[hour] = slot_of.get(hour, -1)
            if i < 0:
                continue
            c = cells.get(integ)
            if c is None:
                c = cells[integ] = [0] * 48
            c[2 * i] += up
            c[2 * i + 1] += up + down
    summed = [k for k in windows if not (hourly and k == "24h")]
    top = day[-1] + timedelta(hours=1)
    sums = store.history.availability_sums([starts[k] for k in summed], [only] if only else None, top) if summed else {}
    uptime = {integ: (up, total) for integ, up, total in store.history.uptime_totals(day[0], only)} \
        if deprecated_uptime else {}
    open_by: dict[str, list[int]] = defaultdict(list)
    for inc in store.alerts.incidents("open") if incidents is None else incidents:
        for affected in set(inc.affected) | {m["integration"] for m in inc.members}:
            open_by[affected].append(inc.id)
    intervals = _intervals(cfg)
    default_interval = float(cfg.defaults.interval)
    none = [(0, 0)] * len(summed)
    configured = {i.name: i for i in cfg.integrations}
    out = []
    for row in store.history.integration_rows(only):
        checks = []
        own = states.get(row.name, {})
        for kind in row.checks:
            st = own.get(kind)
            code = st.last_code if st is not None else None
            checks.append(CheckView(kind, _check_status(row.paused, st), code,
                                    diagnoses.get(code).title if code else None,
                                    st.since if st is not None else None,
                                    st.last_checked_at if st is not None else None,
                                    st.last_ok_at if st is not None else None))
        view = IntegrationView(row.name, row.tenant, row.app, row.system, row.flow, row.mailbox, list(row.tags or []),
                               bool(row.paused), checks, incidents=sorted(open_by.get(row.name, [])))
        integ = configured.get(row.name)
        if integ is not None:
            app = cfg.apps.get(integ.app)
            view.account = integ.account
            view.app_title, view.client_id = (app.display_name, app.client_id) if app is not None else (None, None)
        if checks:
            view.headline = min(checks, key=lambda c: RANK.get(c.status, 4))
            view.status = view.headline.status
        if fix and view.headline and view.status not in ("ok", "pending", "paused"):
            steps = diagnoses.render_fix(view.headline.code or "unclassified", **_integ_facts(cfg, row.name))
            view.fix_first = steps[0] if steps else None
        if not view.paused:
            cutoff = now - timedelta(seconds=2 * intervals.get(row.name, default_interval))
            view.stale = any(c.last_checked_at is not None and c.last_checked_at < cutoff for c in checks)
        if hourly:
            c = cells.get(row.name) or [0] * 48
            view.day_starts, view.cells_24h = day, c
            if "24h" in windows:
                up, known = sum(c[0::2]), sum(c[1::2])
                view.availability["24h"] = percent(up, known - up)
        for key, (up, down) in zip(summed, sums.get(row.name, none), strict=True):
            view.availability[key] = percent(up, down)
        if deprecated_uptime:
            good, total = uptime.get(row.name, (0, 0))
            view.uptime_24h = round(100.0 * good / total, 1) if total else None
        out.append(view)
    return select_views(sorted(out, key=lambda v: (RANK.get(v.status, 4), v.name)), tenant=tenant, tag=tag,
                        status=status)


def select_views(items: list[IntegrationView], *, tenant: str | None = None, tag: str | None = None,
                 status: str | None = None, system: str | None = None, app: str | None = None,
                 q: str | None = None) -> list[IntegrationView]:
    """The overview's filters, on views already built; ``q``: the search (``matches``)."""
    needle = q.casefold() if q else None
    return [v for v in items if (not tenant or v.tenant == tenant) and (not tag or tag in v.tags)
            and (not system or (v.system or "") == system) and (not app or v.app == app)
            and (not status or v.status == status or (status == "stale" and v.stale)
                 or (status == "problem" and v.status not in ("ok", "paused")))
            and (needle is None or needle in haystack(v))]


def quiet(v: IntegrationView) -> bool:
    """Ok or paused, and not stale: the rows the overview lists a page at a time (``pages.paginate``); every other
    one is on every page."""
    return v.status in ("ok", "paused") and not v.stale


def haystack(v: IntegrationView) -> str:
    """What the overview's search looks in, case-folded, one field a line (a search never spans two): the
    integration's name, mailbox, signing-in account, app (its name in the config, in Entra ID, its client id),
    consuming system, and the diagnosis (code and title) of each of its checks that has one. The fields are joined
    by NUL, which no search holds (``params.text`` refuses control characters)."""
    fields = [v.name, v.mailbox, v.account, v.app, v.app_title, v.client_id, v.system]
    for c in v.checks:
        fields += (c.code, c.title)
    return "\0".join(f for f in fields if f).casefold()


# the overview's groupings: what each groups by, as a key and the heading the people read
GROUPS = ("tenant", "system", "app", "status")
COUNT_ORDER = ("fail", "error", "blocked", "warn", "ok", "paused", "pending")


def group_key(v: IntegrationView, by: str) -> tuple[str, str]:
    """(key, heading) of ``v``'s group: the value its filter takes, and how the heading names it."""
    if by == "tenant":
        return v.tenant, v.tenant
    if by == "system":
        return v.system or "", v.system or "no system named"
    if by == "app":
        return v.app, f"{v.app_title} ({v.app})" if v.app_title and v.app_title != v.app else v.app
    return v.status, LABEL.get(v.status, v.status)


@dataclass(slots=True)
class Group:
    key: str
    heading: str
    rows: list[IntegrationView]
    counts: dict[str, int]  # per status (COUNT_ORDER), only those present
    stale: int
    hidden: int = 0  # its ok and paused rows on other pages of the overview (``rows`` holds the others)


def groups(items: list[IntegrationView], by: str) -> list[Group]:
    """``items`` (worst first) in groups by ``by`` (GROUPS), the worst group first: by its worst status, then by
    how many integrations it has in each status from fail down, then by its heading. Rows keep their order."""
    found: dict[str, Group] = {}
    for v in items:
        key, heading = group_key(v, by)
        g = found.get(key)
        if g is None:
            g = found[key] = Group(key, heading, [], {}, 0)
        g.rows.append(v)
        g.counts[v.status] = g.counts.get(v.status, 0) + 1
        g.stale += v.stale
    for g in found.values():
        g.counts = {s: g.counts[s] for s in COUNT_ORDER if s in g.counts}

    def worst(g: Group) -> tuple[Any, ...]:
        return (min(RANK.get(s, 4) for s in g.counts), *(-g.counts.get(s, 0) for s in COUNT_ORDER[:4]),
                -g.stale, g.heading.casefold(), g.key)

    return sorted(found.values(), key=worst)


def freshness(cfg: Config, store: Any, now: datetime, items: list[IntegrationView] | None = None) -> dict[str, Any]:
    """The newest result, and whether it is older than twice the shortest interval (monitor stalled).
    ``items``: views already read (their check states), instead of reading every state again."""
    if items is not None:
        newest = max((c.last_checked_at for v in items for c in v.checks if c.last_checked_at), default=None)
    else:
        newest = max((st.last_checked_at for st in store.checks.states() if st.last_checked_at), default=None)
    active = [i for i in cfg.integrations if not i.paused]
    interval = min((float(cfg.threshold(i, "interval")) for i in active), default=float(cfg.defaults.interval))
    stale = newest is not None and (now - newest).total_seconds() > 2 * interval
    return {"newest": newest, "interval_s": interval, "stale": stale,
            "none_yet": newest is None and bool(active)}


def credentials(cfg: Config, store: Any, now: datetime, within_days: int | None = None,
                client_id: str | None = None) -> list[dict[str, Any]]:
    """Credential metadata, soonest expiry first; ``within_days`` keeps those ending by then (and expired)."""
    users: dict[str, list[str]] = defaultdict(list)
    for integ in cfg.integrations:
        users[integ.app].append(integ.name)
    out = []
    for c in store.inventory.credentials(client_id):
        days = None
        if c.expires_at is not None:
            days = expiry.days_left(c.expires_at, now)
            if within_days is not None and (c.expires_at - now).total_seconds() > within_days * 86400:
                continue
        elif within_days is not None:
            continue
        out.append({"tenant": c.tenant, "app": c.app, "client_id": c.client_id, "kind": c.kind,
                    "key_id": c.key_id, "display_name": redact(c.display_name) if c.display_name else None,
                    "hint": c.hint, "expires_at": iso(c.expires_at),
                    "days_left": days,
                    "expired": c.expires_at is not None and expiry.expired(c.expires_at, now), "source": c.source,
                    "last_verified_at": iso(c.last_verified_at), "integrations": sorted(users.get(c.app, []))})
    return sorted(out, key=lambda c: (c["expires_at"] is None, c["expires_at"] or ""))


def incident_json(inc: Any) -> dict[str, Any]:
    """The shape of `mailwarden incidents --format json`."""
    from mailwarden.alerts.incidents import incident_json as serialize

    return serialize(inc)


def detail(cfg: Config, store: Any, name: str, now: datetime) -> dict[str, Any] | None:
    """Everything of one integration's page."""
    found = integrations(cfg, store, now, name=name)
    return details(cfg, store, found, now)[0] if found else None


def details(cfg: Config, store: Any, items: list[IntegrationView], now: datetime, *, compact: bool = False,
            incidents: list[Any] | None = None) -> list[dict[str, Any]]:
    """The page of each of ``items`` (their overview rows), read together: one statement per kind of data
    for all of them (the report gives a page to every integration that is not ok). ``incidents``: every
    incident, oldest first, when the caller has read them. ``compact``: bars with one tooltip per bar, not per
    cell, and the 7 days' latency line (the report); otherwise also each check's runs over 90 days, its last runs
    as beats and their latency as a chart with axes (an integration's page)."""
    names = [v.name for v in items]
    if not names:
        return []
    latest: dict[str, dict[str, Any]] = defaultdict(dict)
    for r in store.history.latest_results_of(names):
        latest[r.integration][r.check] = r
    windows = svg.window_starts(now)
    # the checks' runs over 90 days too on an integration's page (its availability figures stay those of every
    # surface: 24 h, 7 d, 30 d)
    runs = {w.key: store.history.uptime_cells(names, w.start, w.hours_per_cell, w.cells)
            for w in svg.window_starts(now, long=not compact)}
    available = {w.key: store.history.availability_cells(names, w.start, w.hours_per_cell, w.cells) for w in windows}
    latency = store.history.latency_rows(names, now - timedelta(days=7))
    every = store.alerts.incidents(None) if incidents is None else incidents
    client_ids = set()
    for v in items:
        try:
            client_ids.add(cfg.apps[cfg.integration(v.name).app].client_id)
        except KeyError:
            pass
    only = next(iter(client_ids)) if len(client_ids) == 1 else None
    creds: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if client_ids:
        for c in credentials(cfg, store, now, client_id=only):
            creds[c["client_id"]].append(c)
    return [_page(cfg, store, v, now, latest[v.name], {w: runs[w][v.name] for w in runs},
                  svg.availability_windows({w: available[w][v.name] for w in available}, now, compact=compact),
                  latency[v.name], every, creds, compact) for v in items]


BEATS = 60  # runs of a check shown as beats on its integration's page


def _recent(store: Any, name: str, check: str, hourly: list[tuple[str, datetime, float]]) -> dict[str, Any]:
    """A check's last ``BEATS`` runs as beats (the stored raw results: kept by age and count, ``retention``), their
    latency as a chart with its axes, and the 7 days' hourly mean latency as another once it has two hours."""
    runs = store.checks.results(name, check, None, BEATS)
    timed = [(r.checked_at, float(r.latency_ms)) for r in reversed(runs) if r.latency_ms is not None]
    means = [(hour, ms) for _, hour, ms in hourly]
    out: dict[str, Any] = {"beats": svg.beats(runs, slots=BEATS), "runs": len(runs),
                           "runs_good": sum(1 for r in runs if r.status in ("ok", "warn")),
                           "oldest_run": runs[-1].checked_at if runs else None, "latency_runs": None,
                           "latency_hours": None}
    if timed:
        out["latency_runs"] = svg.latency_chart(timed, label=f"latency of the last {len(timed)} timed runs of "
                                                             f"{check}: {svg.latency_figures([v for _, v in timed])}")
        out["latency_runs_text"] = svg.latency_figures([v for _, v in timed])
    # the canary's end-to-end delay (a reading check with `canary`: checks.mailflow), seconds from sent to received
    delays = [(r.checked_at, float(r.details["canary_delay_s"])) for r in reversed(runs)
              if isinstance((r.details or {}).get("canary_delay_s"), int | float)]
    out["canary_delays"] = None
    if delays:
        text = svg.latency_figures([v for _, v in delays], "s")
        out["canary_delays"] = svg.latency_chart(delays, measure="s", label=f"canary delivery delay, the last "
                                                                             f"{len(delays)} found by {check}: {text}")
        out["canary_delays_text"] = text
    if len(means) >= 2:
        means.sort()
        text = svg.latency_figures([v for _, v in means]).replace("latest", "latest hour")
        out["latency_hours"] = svg.latency_chart(means, unit="hour", label=f"hourly mean latency of {check}, last 7 "
                                                                          f"days: {text}")
        out["latency_hours_text"] = text
    return out


def _page(cfg: Config, store: Any, view: IntegrationView, now: datetime, latest: dict[str, Any],
          runs: dict[str, list[tuple[str, int, int, int]]], availability: list[dict[str, Any]],
          latency_rows: list[Any], every: list[Any], creds_by_client: dict[str, list[dict[str, Any]]],
          compact: bool) -> dict[str, Any]:
    name = view.name
    uptime = svg.run_windows(runs, [c.check for c in view.checks], now, compact=compact, long=not compact)
    latency = svg.by_check(latency_rows)
    results = []
    for c in view.checks:
        r = latest.get(c.check)
        item: dict[str, Any] = {"view": c, "result": result_json(cfg, r) if r else None, "cause": None,
                                "diagnosis": None, "windows": uptime[c.check]}
        if compact:  # the report: the 7 days' hourly line, no runs
            item["spark"] = svg.sparkline(latency.get(c.check, []), None, now)
        else:
            item.update(_recent(store, name, c.check, latency.get(c.check, [])))
        if r is not None and r.status != "ok":
            outcome = Outcome(Status(r.status), r.code, r.summary, r.latency_ms, dict(r.details or {}))
            d = diagnoses.get(r.code)
            item["diagnosis"] = d
            item["cause"] = diagnoses.render_cause(r.code or "unclassified", **_integ_facts(cfg, name, outcome))
        results.append(item)
    # worst first; among equals the token check first: it is usually the root cause
    results.sort(key=lambda i: (RANK.get(i["view"].status, 4), i["view"].check != TOKEN_KIND, i["view"].check))
    incidents = [i for i in every if name in set(i.affected) | {m["integration"] for m in i.members}][-20:]
    notes = [n for i in incidents for n in store.alerts.notifications(i.id)][-30:]
    client_id = None
    try:
        integ = cfg.integration(name)
        client_id = cfg.apps[integ.app].client_id
    except KeyError:
        integ = None
    in_use = {(latest["secret_expiry"].details or {}).get("key_id")} if "secret_expiry" in latest else set()
    creds = [dict(c) for c in creds_by_client.get(client_id, [])] if client_id else []
    for cred in creds:
        cred["in_use"] = cred["key_id"] in in_use
    # the row of the account's token (tenant, app, account), shared by its integrations (migration 0009)
    token = store.token_caches.load_token_cache(token_key(cfg, integ), name) \
        if view.flow == "delegated" and integ else None
    token_state = next((c for c in view.checks if c.check == TOKEN_KIND), None)
    needs_reauth = bool(token_state and token_state.code and diagnoses.get(token_state.code).needs_reauth)
    return {"view": view, "availability": availability, "results": results,
            "transitions": store.checks.transitions(name, limit=30),
            "incidents": list(reversed(incidents)), "notifications": list(reversed(notes)), "credentials": creds,
            "reauth": {"delegated": view.flow == "delegated", "account": integ.account if integ else None,
                       "stored_for": token.account if token else None,
                       "updated_at": token.updated_at if token else None, "needs_reauth": needs_reauth}}
