"""The small part of OData `$filter` the audit-log and report endpoints accept: clauses joined by `and`.

A clause is `prop op value` (op eq ne ge le gt lt; value a quoted string, a number, true/false, or an unquoted
ISO date/time) or `coll/any(v: v eq 'x' [or v eq 'y'])` / `coll/any(v: v/prop eq 'x')`. Anything else, and `or`
between clauses, is refused with FilterError (Graph answers 400 BadRequest "Invalid filter clause").
Paging: `$top` and an opaque `$skiptoken` (the position after the last item of the page).
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from dataclasses import dataclass, field

_VALUE = r"'(?:[^']|'')*'|[^\s()]+"
_CMP = re.compile(rf"^(?P<prop>[A-Za-z_][\w/]*)\s+(?P<op>eq|ne|ge|le|gt|lt)\s+(?P<value>{_VALUE})$", re.I)
_ANY = re.compile(r"^(?P<coll>[A-Za-z_]\w*)/any\(\s*(?P<var>\w+)\s*:\s*(?P<body>.+)\)$", re.I | re.S)


class FilterError(ValueError):
    pass


@dataclass
class Cmp:
    prop: str
    op: str
    value: object


@dataclass
class AnyOf:
    coll: str
    prop: str | None  # None: the items themselves (signInEventTypes); else the item's property (t/id)
    op: str
    values: list = field(default_factory=list)  # joined by `or` inside the lambda


def value_of(text: str):
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise FilterError(text) from exc
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _split(expr: str, word: str) -> list[str]:
    """Split on ` word ` outside quotes and parentheses."""
    parts, depth, quoted, start, i = [], 0, False, 0, 0
    pat = re.compile(rf"\s+{word}\s+", re.I)
    while i < len(expr):
        c = expr[i]
        if c == "'":
            quoted = not quoted
        elif not quoted and c == "(":
            depth += 1
        elif not quoted and c == ")":
            depth -= 1
        elif not quoted and depth == 0:
            m = pat.match(expr, i)
            if m:
                parts.append(expr[start:i])
                start = i = m.end()
                continue
        i += 1
    if quoted or depth:
        raise FilterError(expr)
    parts.append(expr[start:])
    return [p.strip() for p in parts]


def _unwrap(clause: str) -> str:
    while clause.startswith("(") and clause.endswith(")") and _balanced(clause[1:-1]):
        clause = clause[1:-1].strip()
    return clause


def _balanced(text: str) -> bool:
    depth, quoted = 0, False
    for c in text:
        if c == "'":
            quoted = not quoted
        elif not quoted:
            depth += (c == "(") - (c == ")")
            if depth < 0:
                return False
    return depth == 0 and not quoted


def parse(expr: str | None) -> list[Cmp | AnyOf]:
    if not expr or not expr.strip():
        return []
    out: list[Cmp | AnyOf] = []
    for clause in _split(_unwrap(expr.strip()), "and"):
        clause = _unwrap(clause)
        if len(_split(clause, "or")) > 1:
            raise FilterError(clause)
        m = _ANY.match(clause)
        if m:
            var = m.group("var")
            alts = [_unwrap(a) for a in _split(m.group("body").strip(), "or")]
            found = [re.match(rf"^{re.escape(var)}(?:/(?P<prop>\w+))?\s+(?P<op>eq|ne)\s+(?P<v>{_VALUE})$", a, re.I)
                     for a in alts]
            if not all(found) or len({(f.group("prop") or "", f.group("op").lower()) for f in found}) != 1:
                raise FilterError(clause)
            out.append(AnyOf(m.group("coll"), found[0].group("prop"), found[0].group("op").lower(),
                           [value_of(f.group("v")) for f in found]))
            continue
        m = _CMP.match(clause)
        if not m:
            raise FilterError(clause)
        out.append(Cmp(m.group("prop"), m.group("op").lower(), value_of(m.group("value"))))
    return out


def compare(actual, op: str, wanted) -> bool:
    if isinstance(wanted, dt.datetime):
        if actual is None:
            return False
        return {"eq": actual == wanted, "ne": actual != wanted, "ge": actual >= wanted, "le": actual <= wanted,
                "gt": actual > wanted, "lt": actual < wanted}[op]
    if op not in ("eq", "ne"):
        raise FilterError(f"{op} on a non-date value")
    same = str(actual).lower() == str(wanted).lower() if isinstance(wanted, str) else actual == wanted
    return same if op == "eq" else not same


def skiptoken(created: dt.datetime, seq: int) -> str:
    """Opaque to clients: the (time, seq) of the page's last item; the next page starts after it."""
    raw = f"{seq}|{created.isoformat()}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def after(token: str | None) -> tuple[dt.datetime, int] | None:
    """The position a $skiptoken points after (None: the first page); FilterError when it is not ours."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        seq, when = raw.split("|", 1)
        return dt.datetime.fromisoformat(when), int(seq)
    except (ValueError, IndexError) as exc:
        raise FilterError("$skiptoken") from exc


def top(value: str | None, default: int, maximum: int) -> int:
    if value is None:
        return default
    try:
        n = int(value)
    except ValueError as exc:
        raise FilterError("$top") from exc
    if n < 1:
        raise FilterError("$top")
    return min(n, maximum)
