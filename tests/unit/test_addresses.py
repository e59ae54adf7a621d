"""Comparison keys: every spelling of one mailbox gets one key, different mailboxes keep theirs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sendrail.mail.addresses import comparison_key


@pytest.mark.parametrize(("address", "key"), [
    ("bob@x.com", "bob@x.com"),
    ("Bob@x.com", "bob@x.com"),
    ("BOB@X.COM", "bob@x.com"),
    ("  bob@x.com ", "bob@x.com"),
    ("bob@x.com.", "bob@x.com"),
    ("bob+news@x.com", "bob+news@x.com"),  # plus-tags kept
    ("Bob+News@X.com", "bob+news@x.com"),
    ("bob.smith@x.com", "bob.smith@x.com"),  # dots matter outside Gmail
    ("bob.smith@outlook.com", "bob.smith@outlook.com"),
    ("bob.smith@acme-on-workspace.com", "bob.smith@acme-on-workspace.com"),
    ("Bob.Smith@gmail.com", "bobsmith@gmail.com"),
    ("b.o.b.smith@Gmail.com", "bobsmith@gmail.com"),
    ("bob.smith@googlemail.com", "bobsmith@gmail.com"),
    ("bob.smith+a.b@gmail.com", "bobsmith+a.b@gmail.com"),  # the tag is kept as written
    ("bob@bücher.example", "bob@xn--bcher-kva.example"),
    ("bob@BÜCHER.example", "bob@xn--bcher-kva.example"),
    ("bob@XN--BCHER-KVA.example", "bob@xn--bcher-kva.example"),
    ('"Bob@Home"@x.com', '"bob@home"@x.com'),  # a quoted local part holding an @
    ("Jörg@x.com", "jörg@x.com"),
    ("bob@corp.local", "bob@corp.local"),
    ("not an address", "not an address"),
    ("@x.com", "@x.com"),
    ("bob@", "bob@"),
    ("", ""),
], ids=lambda value: repr(value))
def test_comparison_key(address: str, key: str) -> None:
    assert comparison_key(address) == key


@pytest.mark.parametrize(("first", "second", "same"), [
    ("Bob@x.com", "bob@X.COM", True),
    ("bob@x.com", "bob+tag@x.com", False),
    ("bob.smith@x.com", "bobsmith@x.com", False),
    ("bob.smith@gmail.com", "BobSmith@googlemail.com", True),
    ("bob@x.com", "bob@x.org", False),
    ("bob@bücher.example", "BOB@xn--bcher-kva.example", True),
])
def test_same_mailbox(first: str, second: str, same: bool) -> None:
    assert (comparison_key(first) == comparison_key(second)) is same


@given(st.text(max_size=80))
def test_any_text_gets_a_stable_key(text: str) -> None:
    key = comparison_key(text)
    assert comparison_key(key) == key
