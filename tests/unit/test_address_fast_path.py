"""The address check's fast path gives exactly the full check's verdict and normal form."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sendrail.validation import _checked_address, _plain_address, normalize_address

ATEXT = "abcxyzABCXYZ0189_!#$%&'*+-/=?^`{|}~"
LOCAL_CHARS = ATEXT + '.."@< é\\'
DOMAINS = [
    "example.org", "Customer.EXAMPLE.com", "mail.example.co.uk", "a.b", "localhost",
    "x.test", "example.invalid", "host.local", "xn--bcher-kva.de", "bücher.de", "a..b",
    "-a.com", "a-.com", "a.123", "123.com", "ex_ample.com", "example.com.", ".example.com",
    "[127.0.0.1]", "a" * 63 + ".com", "a" * 64 + ".com", ".".join(["abcdefghi"] * 25) + ".com",
    "exa mple.com", "example.com>", 'ex"ample.com', "e@example.com", "",
]


def verdict(value: str) -> str | None:
    """The full check's normal form, or None where it refuses the address."""
    try:
        return _checked_address(value)
    except ValueError:
        return None


@settings(max_examples=3000, deadline=None)
@given(local=st.text(LOCAL_CHARS, max_size=80),
       domain=st.one_of(st.sampled_from(DOMAINS), st.text("abcXYZ09-.", max_size=40)))
def test_the_fast_path_agrees_with_the_full_check(local: str, domain: str) -> None:
    value = f"{local}@{domain}"
    fast = _plain_address(value)
    if fast is not None:
        assert fast == verdict(value)


@pytest.mark.parametrize(("value", "normal"), [
    ("Lead.One@Customer.EXAMPLE.com", "Lead.One@customer.example.com"),
    ("Postmaster@example.org", "postmaster@example.org"),
    ("a+tag@mail.example.co.uk", "a+tag@mail.example.co.uk"),
])
def test_common_addresses_take_the_fast_path(value: str, normal: str) -> None:
    assert _plain_address(value) == normal
    assert normalize_address(value) == normal


@pytest.mark.parametrize("value", [
    "x@localhost", "x@example.test", "x@a..b", '"quoted"@example.org', "x@bücher.de",
    "Ann <ann@example.org>", f"{'a' * 250}@example.org",
])
def test_other_addresses_get_the_full_check(value: str) -> None:
    assert _plain_address(value) is None
