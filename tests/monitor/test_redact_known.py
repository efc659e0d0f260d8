"""Registered secrets are masked wherever they occur in a text, whatever their length and position.

``redact`` looks up the text's substrings only at every s-th position (core/redact.py: a value of length
L >= s + 6 - 1 always holds one of them), so these tests place values at every offset around the stride and the
tier boundary (values of 6 to 20 characters are looked up with a smaller stride), and compare with the plain
definition: every known value replaced, longest first."""

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mailwarden.redact as redact_mod
from mailwarden.redact import MASK, redact, register_secret

# no lower-case letters: a value can never be spelled inside the mask ("[redacted]") or a pattern's needle
ALPHABET = string.ascii_uppercase + string.digits + "-_~."


@pytest.fixture(autouse=True)
def only_these_secrets(monkeypatch):
    """The registry holds only what a test registers (other tests' secrets would mask these texts too)."""
    monkeypatch.setattr(redact_mod, "_known", set())
    monkeypatch.setattr(redact_mod, "_long", {})
    monkeypatch.setattr(redact_mod, "_short", None)


def plainly(text: str, known: list[str]) -> str:
    for value in sorted(known, key=lambda v: (-len(v), v)):
        text = text.replace(value, MASK)
    return text


def value_of(length: int, seed: int) -> str:
    return "".join(ALPHABET[(seed * 7 + i * 13 + i * i) % len(ALPHABET)] for i in range(length))


@pytest.mark.parametrize("length", [6, 7, 8, 12, 20, 21, 22, 32, 38, 74])
def test_a_value_is_masked_at_every_position(length):
    secret = value_of(length, length)
    register_secret(secret)
    filler = "x" * 60
    for at in range(0, 2 * redact_mod._STRIDE + 3):
        text = filler[:at] + secret + filler[:at % 5]
        out = redact(text)
        assert secret not in out and out == filler[:at] + MASK + filler[:at % 5], (length, at)


def test_short_and_long_values_together_at_every_position():
    """A short value makes a second, denser lookup; the long ones keep theirs."""
    short, long = value_of(8, 1), value_of(40, 2)
    register_secret(short)
    register_secret(long)
    for at in range(40):
        text = "x" * at + long + " y " + short + "z" * (at % 7)
        assert redact(text) == "x" * at + MASK + " y " + MASK + "z" * (at % 7), at


def test_a_value_inside_another_goes_with_the_longer():
    inner = value_of(10, 3)
    outer = "AB" + inner + "CD" + value_of(20, 4)
    register_secret(inner)
    register_secret(outer)
    assert redact(f"x {outer} y {inner} z") == f"x {MASK} y {MASK} z"


def test_overlapping_values_of_one_length_mask_the_same_span_whatever_their_order():
    """Found by the property test below: 0000010 and 0000000 overlap in the text; either order leaves no value
    readable, and the fixed order makes the output one."""
    for order in (["0000010", "0000000", "000000", "00000000"], ["00000000", "000000", "0000000", "0000010"]):
        redact_mod._known.clear()
        redact_mod._long.clear()
        redact_mod._short = None
        for value in order:
            register_secret(value)
        assert redact("0000010000000") == f"000001{MASK}"  # 0000000 before 0000010: no value left readable


def test_a_value_repeating_one_character():
    register_secret("A" * 30)
    assert redact("x" + "A" * 45 + "x") == "x" + MASK + "A" * 15 + "x"
    assert redact("A" * 29) == "A" * 29


def test_a_secret_registered_after_a_redaction_is_masked_from_then_on():
    first, later = value_of(30, 5), value_of(30, 6)
    register_secret(first)
    assert redact(f"{first} {later}") == f"{MASK} {later}"
    register_secret(later)
    assert redact(f"{first} {later}") == f"{MASK} {MASK}"


@settings(max_examples=300, deadline=None)
@given(secrets=st.lists(st.text(ALPHABET, min_size=6, max_size=60), min_size=1, max_size=6, unique=True),
       parts=st.lists(st.one_of(st.text(ALPHABET + "xyz ", max_size=25), st.integers(0, 5)), max_size=12))
def test_as_plainly_defined(secrets, parts):
    redact_mod._known.clear()
    redact_mod._long.clear()
    redact_mod._short = None
    for value in secrets:
        register_secret(value)
    # the text: random fragments and whole or clipped secrets (a clipped one must stay readable)
    pieces = []
    for part in parts:
        if isinstance(part, int):
            value = secrets[part % len(secrets)]
            pieces.append(value if part < 4 else value[1:])
        else:
            pieces.append(part)
    text = "".join(pieces)
    assert redact(text) == plainly(text, secrets)
