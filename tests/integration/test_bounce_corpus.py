"""Bounce parser against flufl.bounce's real bounce messages, fetched by `make setup`.

The expected addresses are read at test time from flufl.bounce's own test table (DETECTORS in
tests/test_detectors.py, read with ast, never imported): each sample must be read as a bounce
(or a delay where flufl marks it temporary) naming exactly those addresses.
"""

import ast
from pathlib import Path

import pytest

from sendrail.bounces import NoticeKind, parse_notice

REPO_ROOT = Path(__file__).resolve().parents[2]
FLUFL_TESTS = REPO_ROOT / ".cache" / "corpus" / "flufl_bounce-6.0.0" / "tests"
# Samples read exactly: 109 of the 111 flufl lists addresses for. The two left are read by no
# general rule: yale_01 (flufl builds the addresses from Yale's directory conventions) and
# simple_20 (a person's "RE: ...: non remis" reply whose text is an NDR).
MIN_EXACT = 109
# Samples flufl's table lists without an address that are not bounces at all (a person's reply,
# an auto-reply); the other address-less samples are bounces whose addresses are redacted.
NOT_BOUNCES = ("groupwise_03.txt", "qmail_08.txt")


def expected_by_file() -> dict[str, tuple[set[str], bool]]:
    """{sample file: (expected addresses, lowercased; whether flufl calls it temporary)}."""
    source = FLUFL_TESTS / "test_detectors.py"
    if not source.is_file():
        pytest.fail(f"bounce corpus missing: {source} not found; run `make setup` to fetch it")
    table = None
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "DETECTORS" for target in node.targets
        ):
            table = ast.literal_eval(node.value)
    assert table, f"no DETECTORS table in {source}"
    expected: dict[str, tuple[set[str], bool]] = {}
    for _detector, filename, addresses, temporary in table:
        wanted, _ = expected.setdefault(filename, (set(), temporary))
        wanted.update(address.decode().lower() for address in addresses)
    return expected


def test_the_corpus_is_read_with_the_expected_kind_and_addresses() -> None:
    expected = expected_by_file()
    with_addresses = {name: value for name, value in expected.items() if value[0]}
    misread = []
    for filename, (addresses, temporary) in sorted(with_addresses.items()):
        notice = parse_notice((FLUFL_TESTS / "data" / filename).read_bytes())
        kind = NoticeKind.DELAY if temporary else NoticeKind.BOUNCE
        found = {recipient.address for recipient in notice.recipients}
        if notice.kind is not kind or found != addresses:
            misread.append(f"{filename}: {notice.kind.value} {sorted(found)}, expected {kind.value} {sorted(addresses)}")
    exact = len(with_addresses) - len(misread)
    assert len(with_addresses) >= 111, f"the corpus lists {len(with_addresses)} samples, expected at least 111"
    assert exact >= MIN_EXACT, f"{exact} of {len(with_addresses)} read exactly:\n" + "\n".join(misread)


@pytest.mark.parametrize("filename", NOT_BOUNCES)
def test_samples_that_are_not_bounces_are_not_read_as_bounces(filename: str) -> None:
    expected = expected_by_file()
    assert expected[filename][0] == set(), f"{filename} is no longer listed without addresses"
    notice = parse_notice((FLUFL_TESTS / "data" / filename).read_bytes())
    assert notice.kind is not NoticeKind.BOUNCE


def test_the_auto_reply_in_the_corpus_keeps_its_kind_and_responder() -> None:
    notice = parse_notice((FLUFL_TESTS / "data" / "qmail_08.txt").read_bytes())
    assert notice.kind is NoticeKind.AUTO_REPLY
    assert [recipient.address for recipient in notice.recipients] == ["contact@example.com"]


def test_every_sample_is_read_without_error() -> None:
    """Every file the corpus ships, listed or not, gives a Notice, never a parser failure."""
    expected_by_file()  # fails clearly when the corpus is missing
    failures = []
    for path in sorted((FLUFL_TESTS / "data").glob("*.txt")):
        notice = parse_notice(path.read_bytes())
        if notice.problem and notice.problem.startswith("parser failed"):
            failures.append(f"{path.name}: {notice.problem}")
    assert not failures, "\n".join(failures)
