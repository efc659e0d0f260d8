"""Text from outside in alert bodies, made inert for each body format Apprise sends: plain text, markdown (and the
HTML Apprise converts that markdown into).

An alert interpolates text mailwarden did not write: a mail server's reply, the display name an app owner gave a
secret in Entra ID, the name someone acknowledged an incident with. Rendered raw into markdown, ``[Re-authorise
here](https://evil.example)`` became a working link in the mail, Slack, Teams and Telegram message; a bare URL became
one in every client that links URLs. So an alert's only markup and links are mailwarden's own:

- ``clean``: every value loses control and format characters (zero-width spaces, bidi overrides), private-use
  characters, and its line breaks (so a value cannot start a heading, a list or a new paragraph); NFKC folds
  full-width look-alikes (``ｈｔｔｐｓ：／／``) to the characters a client would link.
- ``defang``: a URL (``://``), a ``www.`` host or a host name with a top-level domain of the DNS root is written so no
  client links it: ``hxxps``-style as ``https[:]//evil[.]com``. An e-mail address keeps its domain (it is how a
  mailbox is named; a client may offer to write to it, never open a page).
- ``md_escape``: markdown's link, emphasis, HTML and entity syntax is backslash-escaped (CommonMark's escapes, which
  Apprise's Slack, Telegram and HTML conversions honour); a code span stays a code span, its backticks balanced and
  any inside neutralised (``ˋ``), since nothing inside one is markup.

``Text`` and ``Markdown`` are strings already fit for their format (mailwarden's own wording, or escaped): the
Jinja environment of ``alerts.messages`` passes them through and escapes everything else (``autoescape``).
Links are written only through ``own_url``: http(s) URLs mailwarden composed itself (its ``web.base_url``).
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from urllib.parse import quote, urlsplit

from mailwarden.alerts.tlds import TLDS
from mailwarden.redact import MASK, redact

TEXT, MARKDOWN = "text", "md"


class Text(str):
    """Plain text fit for a text body as it is."""

    __slots__ = ()
    fmt = TEXT


class Markdown(str):
    """Markdown fit for a markdown body as it is: mailwarden's own markup, everything else escaped."""

    __slots__ = ()
    fmt = MARKDOWN


SAFE = {TEXT: Text, MARKDOWN: Markdown}
_DROP = {"Cc", "Cf", "Co", "Cs", "Cn"}  # control, format (zero-width, bidi), private use, surrogates, unassigned
NEUTRAL_BACKTICK = "\u02cb"  # MODIFIER LETTER GRAVE ACCENT: looks like a backtick, is none


def clean(value: object) -> str:
    """One line of visible characters: NFKC, control and format characters dropped, whitespace runs one space."""
    text = unicodedata.normalize("NFKC", str(value))
    kept = []
    for ch in text:
        if ch.isspace():
            kept.append(" ")
        elif unicodedata.category(ch) not in _DROP:
            kept.append(ch)
    return " ".join("".join(kept).split())


# A host name: labels of letters, digits, hyphens (and underscores, which some linkers accept), joined by dots; not
# the domain of an e-mail address (after "@") and not the middle of a longer dotted word.
_LABEL = r"[^\W_](?:[\w-]*[^\W_])?"
_HOST = re.compile(rf"(?<![\w@.-]){_LABEL}(?:\.{_LABEL})+")


def _top_level(label: str) -> bool:
    label = label.lower()
    if label.isascii():
        return label in TLDS
    try:
        return label.encode("idna").decode("ascii") in TLDS
    except UnicodeError:  # not even IDNA: a client may still link it
        return True


def _defang_host(m: re.Match[str]) -> str:
    host = m.group(0)
    labels = host.split(".")
    # "evil.net__https": Slack reads "__" as emphasis and links what is left, "evil.net": a label's part before an
    # underscore counts as a top-level domain too
    if labels[0].lower() == "www" or any(_top_level(label.split("_", 1)[0]) for label in labels[1:]):
        return "[.]".join(labels)
    return host


def defang(text: str) -> str:
    """No URL or host name a client would link: ``https[:]//evil[.]com``, ``www[.]evil[.]com``, ``evil[.]zip``."""
    return _HOST.sub(_defang_host, text.replace("://", "[:]//"))


def outside(value: object) -> str:
    """Outside text as one inert line of plain text: cleaned, redacted, defanged."""
    return defang(redact(clean(value)))


# -- markdown ------------------------------------------------------------------------------------------------------
_ALWAYS = frozenset("\\*[]<~")  # emphasis, links and images, raw HTML and autolinks, strikethrough
_ENTITY = re.compile(r"&(?:#[0-9]{1,8}|#[xX][0-9a-fA-F]{1,8}|[A-Za-z][A-Za-z0-9]{1,31});")
_LINE_START = re.compile(r"^(?:[#>+=|-]|\d{1,9}(?=[.)]))")


def _escape_plain(s: str, out: list[str]) -> None:
    n = len(s)
    for i, ch in enumerate(s):
        if ch in _ALWAYS:
            out.append("\\" + ch)
        elif ch == "_":  # intraword (snake_case, CUSTOM_CFG_X) cannot open emphasis; anywhere else it may
            inside = 0 < i < n - 1 and s[i - 1].isalnum() and s[i + 1].isalnum()
            out.append("_" if inside else "\\_")
        elif ch == "&" and _ENTITY.match(s, i):
            out.append("\\&")
        else:
            out.append(ch)


def md_escape(text: str) -> str:
    """``text`` as literal markdown: every markup character escaped, except that a complete code span stays a code
    span (its inside is never markup) with single backticks and none inside. A line-start marker (``#``, ``>``,
    ``-``, ``+``, ``=``, ``|``, ``1.``) at its beginning is escaped too, wherever the value lands."""
    runs = [(m.start(), m.end()) for m in _BACKTICKS.finditer(text)]
    by_length: dict[int, list[int]] = {}
    for at, (i, j) in enumerate(runs):
        by_length.setdefault(j - i, []).append(at)
    out: list[str] = []
    plain_from = 0
    at = 0
    while at < len(runs):
        i, j = runs[at]
        if i < plain_from:  # inside a code span already written
            at += 1
            continue
        same = by_length[j - i]
        later = bisect.bisect_right(same, at)
        _escape_plain(text[plain_from:i], out)
        if later == len(same):  # no closing run of the same length: literal backticks
            out.append("\\`" * (j - i))
            plain_from = j
            at += 1
            continue
        close = same[later]
        if out and out[-1].endswith("\\"):  # "\\`" opens a span in CommonMark, escapes the backtick in Telegram's
            out.append(" ")                  # Markdown: a space, so that every reader opens it here
        out.append(_span(text[j:runs[close][0]]))
        plain_from = runs[close][1]
        at = close + 1
    _escape_plain(text[plain_from:], out)
    result = "".join(out)
    m = _LINE_START.match(result)
    if m:
        end = m.end()
        result = result[:end] + "\\" + result[end:] if m.group(0)[0].isdigit() else "\\" + result
    return result


_BACKTICKS = re.compile("`+")


def _span(inner: str) -> str:
    """A code span of ``inner`` that every converter closes where CommonMark does: no backtick inside, and no
    backslash just before the closing one (Apprise's Slack and Telegram conversions read ``\\``` as an escape)."""
    inner = inner.replace("`", NEUTRAL_BACKTICK)
    return "`" + inner + (" `" if inner.endswith("\\") else "`")


def code(value: object, fmt: str) -> str:
    """Outside text shown as a code span in markdown (backticks neutralised), as plain inert text else."""
    text = outside(value)
    if fmt != MARKDOWN:
        return Text(text)
    return Markdown(_span(text)) if text else Markdown("")


class Wording:
    """mailwarden's own sentence with its own markup (``**bold**``, ```code```) and outside values, fit for each body
    format when it is rendered: markdown keeps the markup, plain text drops it; each value is made inert for the
    format: ``{name}`` outside text (escaped, defanged), ``{name:config}`` a name from the configuration (escaped),
    ``{name:code}`` a code span. The alert templates render it for their own format (``escape``)."""

    __slots__ = ("pattern", "values")

    def __init__(self, pattern: str, **values: object):
        self.pattern, self.values = pattern, values

    def render(self, fmt: str) -> str:
        own = self.pattern if fmt == MARKDOWN else self.pattern.replace("**", "").replace("`", "")
        return SAFE[fmt](own.format(**{k: _Slot(v, fmt) for k, v in self.values.items()}))

    def __str__(self) -> str:
        return self.render(TEXT)

    def __repr__(self) -> str:
        return f"Wording({self.pattern!r})"


class _Slot:
    __slots__ = ("value", "fmt")

    def __init__(self, value: object, fmt: str):
        self.value, self.fmt = value, fmt

    def __format__(self, spec: str) -> str:
        if spec == "code":
            return code(self.value, self.fmt)
        if spec == "config":
            return config_text(self.value, self.fmt)
        if spec:
            raise ValueError(f"unknown slot kind {spec!r}: use code, config or nothing")
        return escape(self.value, self.fmt)


def escape(value: object, fmt: str) -> str:
    """Outside text made inert for ``fmt``; a value already fit for ``fmt`` passes as it is, and mailwarden's own
    ``Wording`` is rendered for ``fmt``."""
    if isinstance(value, SAFE[fmt]):
        return value
    if isinstance(value, Wording):
        return value.render(fmt)
    text = outside(value)
    return Markdown(md_escape(text)) if fmt == MARKDOWN else Text(text)


def config_text(value: object, fmt: str) -> str:
    """Text the configuration names (integration names, tenants): escaped for ``fmt``, not defanged."""
    if isinstance(value, SAFE[fmt]):
        return value
    text = redact(clean(value))
    return Markdown(md_escape(text)) if fmt == MARKDOWN else Text(text)


def trusted(text: str, fmt: str) -> str:
    """mailwarden's own wording (which may hold values already made inert) as a string fit for ``fmt``: markdown gets
    its markup characters escaped outside code spans, so that only mailwarden's code spans remain markup."""
    return Markdown(md_escape(text)) if fmt == MARKDOWN else Text(text)


def say(fmt: str, pattern: str, **values: object) -> str:
    """``pattern`` (mailwarden's own wording, no markup) with each value escaped for ``fmt``."""
    return SAFE[fmt](pattern.format(**{k: escape(v, fmt) for k, v in values.items()}))


# -- links ---------------------------------------------------------------------------------------------------------
_NETLOC = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
_URL_SAFE = "/?#=&%:@!$+,;~-._"  # never ( ) < > [ ] ` * \ ' " or a space: they would end or break a markdown link


def own_url(url: object) -> str | None:
    """An http(s) URL mailwarden composed (its web.base_url and paths below it), percent-encoded so that no markdown
    or HTML character remains in it; None when it is not one."""
    text = str(url)
    if any(ch.isspace() or unicodedata.category(ch) in _DROP for ch in text):
        return None
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not _NETLOC.match(parts.netloc):
        return None
    rest = text[len(parts.scheme) + 3 + len(parts.netloc):]
    return f"{parts.scheme}://{parts.netloc}{quote(rest, safe=_URL_SAFE)}"


def link(url: object, fmt: str) -> str:
    """One of mailwarden's own URLs as a link for ``fmt``: an autolink in markdown, the URL in plain text; anything
    else is shown as inert text."""
    safe = own_url(url)
    if safe is None:
        return escape(url, fmt)
    return Markdown(f"<{safe}>") if fmt == MARKDOWN else Text(safe)


def fix_masks(markdown: str) -> str:
    """A ``[redacted]`` the final redaction put into a markdown body, escaped so that it cannot become a link label;
    code spans are left as they are (nothing inside one is markup)."""
    if MASK not in markdown:
        return markdown
    parts = re.split(r"((?<!\\)`[^`]*`)", markdown)
    return "".join(p if p.startswith("`") else _MASKED.sub(_escape_mask, p) for p in parts)


_MASKED = re.compile(re.escape(MASK))


def _escape_mask(m: re.Match[str]) -> str:
    text, at = m.string, m.start()
    backslashes = len(text[:at]) - len(text[:at].rstrip("\\"))
    return m.group(0) if backslashes % 2 else "\\[redacted\\]"
