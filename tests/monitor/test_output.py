"""What `check` and `demo --once` print on a terminal: worst first, names and codes never broken over lines,
whatever the terminal's width; the fix steps of what is broken after the table."""

from __future__ import annotations

import io

from rich.console import Console

from mailwarden.monitor.output import print_table

ROWS = [
    {"integration": "hoth-helpdesk", "check": "pop", "status": "ok", "code": None,
     "summary": "STAT of helpdesk@contoso.com: 3 message(s) waiting (4500 bytes)", "fix": []},
    {"integration": "oracle-b2c-support", "check": "token", "status": "fail", "code": "refresh_token_revoked",
     "summary": "The refresh token of support@contoso.com was revoked (AADSTS50173): sign in again as that "
                "account, then the checks go on by themselves.", "fix": ["Open the reauthorisation link."]},
]


def printed(width: int) -> list[str]:
    out = io.StringIO()
    print_table(ROWS, Console(file=out, width=width, color_system=None), title="one cycle")
    return out.getvalue().splitlines()


def test_narrow_terminal_keeps_names_and_codes_whole():
    lines = printed(80)
    assert all(len(line) <= 80 for line in lines)
    heads = [ln for ln in lines if " / " in ln and not ln.startswith(" ")]
    assert heads[0].split() == ["fail", "oracle-b2c-support", "/", "token", "refresh_token_revoked"]  # worst first
    assert heads[1].split() == ["ok", "hoth-helpdesk", "/", "pop"]
    text = " ".join(ln.strip() for ln in lines)
    assert "then the checks go on by themselves." in text and "1. Open the reauthorisation link." in text


def test_wide_terminal_is_a_table_with_whole_cells():
    lines = printed(160)
    row = next(ln for ln in lines if "oracle-b2c-support" in ln)
    assert "refresh_token_revoked" in row and "│ token" in row
    assert not any("oracle-b2c-sup" in ln and "oracle-b2c-support" not in ln for ln in lines)
