"""The literal checks that let classification skip wording rules never skip a match."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sendrail.bounces.reasons import WORDING_ALTERNATIVES, required_literal


@pytest.mark.parametrize(("pattern", "literal"), [
    (r"sender (address )?(rejected|refused)", "sender "),
    (r"\bbatv\b", "batv"),
    (r"(unknown|invalid) sender", " sender"),
    (r"over ?quota", "quota"),
    (r"user\s+unknown", "unknown"),
    (r"quota exceeded\.", "quota exceeded."),
    (r"x{2,3}yyyy", "yyyy"),
    (r"a|b", None),
    (r"(a|b)", None),
])
def test_the_required_literal_of_a_pattern(pattern: str, literal: str | None) -> None:
    assert required_literal(pattern) == literal


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_match_of_a_wording_rule_contains_its_literal(data: st.DataObject) -> None:
    alternative = data.draw(st.sampled_from(WORDING_ALTERNATIVES))
    literal = required_literal(alternative)
    if literal is None:
        return  # never skipped
    text = data.draw(st.from_regex(re.compile(alternative)))
    match = re.search(alternative, text)
    assert match is not None
    assert literal in match.group(0)
