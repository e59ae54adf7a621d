"""The bounce parser's work grows linearly with its input, however the input is built.

Anyone can mail a sender's inbox, so every notice is hostile until read: one line of spaces
before an "@" must not make parsing take the square of its length. How fast parsing is belongs to
the benchmark (`sendrail bench bounces` reports the worst time per KiB over hostile notices); a
test that timed it would pass or fail with the machine's load. These tests instead establish
linear work in parts that do not depend on any clock:

1. Each pattern is linear in the text it is given. A backtracking matcher (Python's `re`) is
   slow on two shapes: a run that a quantifier may give back to what follows it, where what
   follows can match the same characters (`[ \\t]*<?[ \\t]*`, `\\S+@`: each attempt costs the
   run's length squared); and a run that an unanchored search enters again from every position
   inside it (`[a-z]+@` searched over a long word). `linearity_risks` looks for both in a
   pattern's parse tree, conservatively: a run passes only when it is bounded, possessive, or
   cannot hold what follows it, and (for the second shape) when the pattern is anchored or
   reads, before the run, a character the run cannot hold. Every pattern the bounce modules
   compile when imported must pass (those built while parsing match one address or one reply
   code, and are counted in part 2); the check is itself tested on shapes known to be slow and
   known to be linear.
2. The work around those patterns is linear: for hostile notices that hypothesis builds at
   8 KiB and at 4 times that size, the test counts the characters handed to the parser's
   patterns and the lines of parser code run. Both counts may grow 4 times, with slack up to 8
   for what does not grow alike, never the 16 times of work that is quadratic.
3. Hostile notices as long as the text the parser reads, and up to 256 KiB, are parsed to a
   well-formed Notice, with pytest-timeout as the only clock.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from re import _compiler as sre_compile  # type: ignore[attr-defined]
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from types import FrameType, ModuleType, SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sendrail.bounces import Notice, NoticeKind, parse_notice, parser, reasons, wording
from sendrail.bounces.reasons import HARD_REASONS
from sendrail.mail.headers import SEND_ID_HEADER

BOUNCE_MODULES: tuple[ModuleType, ...] = (parser, reasons, wording)
SIZE = 8 * 1024  # past the parser's thresholds (lines read, header and segment caps)
GROWTH = 4
ALLOWED_GROWTH = 8  # 4 times the work, and room for what does not grow alike; quadratic: 16

# --- 1. the shape of each pattern ---------------------------------------------------------------

_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)
_ONE_CHARACTER = (sre.LITERAL, sre.NOT_LITERAL, sre.IN, sre.ANY)
_UNUSUAL_CHARACTERS = "\x85\xa0\u1680\u2000\u2028\u2029\u202f\u3000\u0130\u0131\u017f\u212a"

Item = tuple[Any, Any]  # one node of a parsed pattern: (opcode, argument)
Chars = frozenset[int]


class _Shape:
    """A pattern's parse tree, read for the two shapes that make backtracking super-linear."""

    def __init__(self, pattern: re.Pattern[Any]) -> None:
        self.tree = sre_parse.parse(pattern.pattern, pattern.flags)
        self.flags = self.tree.state.flags
        self.is_bytes = isinstance(pattern.pattern, bytes)
        # Character sets are compared over a universe: Latin text, unusual blanks and case
        # folds, and every character the pattern names.
        named: set[int] = set()
        self._named(list(self.tree), named)
        self.universe = frozenset(range(256)) if self.is_bytes else frozenset(
            set(range(0x300)) | {ord(c) for c in _UNUSUAL_CHARACTERS} | named
        )
        self._sets: dict[str, Chars] = {}
        self.risks: list[str] = []

    def _named(self, items: list[Item], out: set[int]) -> None:
        for op, av in items:
            if op in (sre.LITERAL, sre.NOT_LITERAL):
                out.add(av)
            elif op is sre.IN:
                for sub_op, sub_av in av:
                    if sub_op is sre.LITERAL:
                        out.add(sub_av)
                    elif sub_op is sre.RANGE:
                        out.update(sub_av)
            else:
                for child in self._children(op, av):
                    self._named(child, out)

    @staticmethod
    def _children(op: Any, av: Any) -> list[list[Item]]:
        if op is sre.SUBPATTERN:
            return [list(av[3])]
        if op is sre.ATOMIC_GROUP:
            return [list(av)]
        if op is sre.BRANCH:
            return [list(alt) for alt in av[1]]
        if op in _REPEATS:
            return [list(av[2])]
        if op in (sre.ASSERT, sre.ASSERT_NOT):
            return [list(av[1])]
        return []

    def chars(self, item: Item) -> Chars:
        """The characters a one-character item matches."""
        key = repr(item)
        if key not in self._sets:
            one = sre_compile.compile(sre_parse.SubPattern(self.tree.state, [item]), self.flags)
            as_text: Callable[[int], Any] = (lambda c: bytes([c])) if self.is_bytes else chr
            self._sets[key] = frozenset(c for c in self.universe if one.fullmatch(as_text(c)))
        return self._sets[key]

    def first(self, items: list[Item]) -> tuple[Chars, bool]:
        """The characters a match of the items can start with (lookaheads included, as they
        read them), and whether the items can match nothing."""
        found: set[int] = set()
        for op, av in items:
            chars, empty = self._first_of(op, av)
            found |= chars
            if not empty:
                return frozenset(found), False
        return frozenset(found), True

    def _first_of(self, op: Any, av: Any) -> tuple[Chars, bool]:
        if op in _ONE_CHARACTER:
            return self.chars((op, av)), False
        if op in (sre.SUBPATTERN, sre.ATOMIC_GROUP, sre.BRANCH):
            firsts = [self.first(child) for child in self._children(op, av)]
            return frozenset().union(*(c for c, _ in firsts)), any(e for _, e in firsts)
        if op in _REPEATS:
            chars, empty = self.first(list(av[2]))
            return chars, empty or av[0] == 0
        if op in (sre.ASSERT, sre.ASSERT_NOT):
            return (self.first(list(av[1]))[0] if av[0] == 1 else frozenset()), True
        if op is sre.AT:
            return frozenset(), True
        return self.universe, True  # a group reference: anything

    def consumed(self, items: list[Item]) -> Chars:
        """Every character the items can consume."""
        found: set[int] = set()
        for op, av in items:
            if op in _ONE_CHARACTER:
                found |= self.chars((op, av))
            elif op in (sre.GROUPREF, sre.GROUPREF_EXISTS):
                found |= self.universe
            elif op not in (sre.ASSERT, sre.ASSERT_NOT):
                for child in self._children(op, av):
                    found |= self.consumed(child)
        return frozenset(found)

    def mandatory(self, items: list[Item]) -> Iterator[Chars]:
        """The character sets of items every match of the items reads."""
        for op, av in items:
            if op in _ONE_CHARACTER:
                yield self.chars((op, av))
            elif op in (sre.SUBPATTERN, sre.ATOMIC_GROUP) or (op in _REPEATS and av[0] > 0):
                yield from self.mandatory(self._children(op, av)[0])

    def can_fail(self, items: list[Item]) -> bool:
        for op, av in items:
            if op in _REPEATS and av[0] == 0:
                continue
            children = self._children(op, av)
            if op in (sre.SUBPATTERN, sre.ATOMIC_GROUP) and not self.can_fail(children[0]):
                continue
            if op is sre.BRANCH and not all(self.can_fail(alt) for alt in children):
                continue
            return True
        return False

    def check(self) -> list[str]:
        self._walk(list(self.tree), frozenset(), False, [], in_repeat=False)
        return self.risks

    def _walk(
        self, items: list[Item], follow: Chars, fails_after: bool, before: list[Item], in_repeat: bool
    ) -> None:
        """`follow`: what may come after the items; `fails_after`: whether what comes after can
        fail; `before`: what a match reads before them."""
        for index, (op, av) in enumerate(items):
            rest, rest_empty = self.first(items[index + 1 :])
            after = rest | follow if rest_empty else rest
            fails = fails_after or self.can_fail(items[index + 1 :])
            prefix = before + items[:index]
            if op in (sre.SUBPATTERN, sre.BRANCH):
                children = self._children(op, av)
                if op is sre.BRANCH and in_repeat:
                    starts = [self.first(alt)[0] for alt in children]
                    if any(a & b for i, a in enumerate(starts) for b in starts[i + 1 :]):
                        self.risks.append(f"repeated alternatives that start alike: {(op, av)!r:.90}")
                for child in children:
                    self._walk(child, after, fails, prefix, in_repeat)
            elif op is sre.ATOMIC_GROUP:  # never gives back what it matched
                self._walk(list(av), frozenset(), fails, prefix, in_repeat)
            elif op in (sre.ASSERT, sre.ASSERT_NOT):
                # Decided within itself; a negative assertion fails when its content matches.
                self._walk(list(av[1]), frozenset(), op is sre.ASSERT_NOT, prefix if av[0] == 1 else [],
                           in_repeat)
            elif op in _REPEATS:
                _, high, body = av
                body_first, _ = self.first(list(body))
                unbounded = high == sre.MAXREPEAT
                if unbounded and op is not sre.POSSESSIVE_REPEAT and body_first & after:
                    self.risks.append(f"a run that can give back what follows it matches: {(op, av)!r:.90}")
                if unbounded and fails and not self._entered_once(prefix, self.consumed(list(body))):
                    self.risks.append(f"a run a search enters from each position in it: {(op, av)!r:.90}")
                body_follow = body_first | after if high > 1 else after
                self._walk(list(body), body_follow, fails, [*prefix, (op, av)], in_repeat or unbounded)

    def _entered_once(self, before: list[Item], run: Chars) -> bool:
        """Whether no two attempts of a search can reach the same stretch of a run of `run`."""
        read = self.consumed(before) | run
        if before:
            op, av = before[0]
            if op is sre.AT and (av is sre.AT_BEGINNING_STRING or (av is sre.AT_BEGINNING and
                                                                  not self.flags & re.MULTILINE)):
                return True  # one attempt only
            if op is sre.AT and av is sre.AT_BEGINNING and ord("\n") not in read:
                return True  # one attempt a line, and the run stays within it
            if op is sre.ASSERT_NOT and av[0] == -1 and len(av[1]) == 1 and read <= self.chars(av[1][0]):
                return True  # attempts start only where such a stretch does
        # A character every attempt reads before the run and the run cannot hold: attempts
        # that reached the same stretch would have read the same such character.
        return any(not chars & run for chars in self.mandatory(before))


def linearity_risks(pattern: re.Pattern[Any]) -> list[str]:
    """What in a pattern could make matching it super-linear in its text (none: it is linear)."""
    return _Shape(pattern).check()


def bounce_patterns() -> dict[str, re.Pattern[Any]]:
    """Every pattern the bounce modules compile when imported, by where it is kept."""
    found: dict[str, re.Pattern[Any]] = {}
    for module in BOUNCE_MODULES:
        for name, value in vars(module).items():
            values = value if isinstance(value, tuple) else (value,)
            for index, entry in enumerate(values):
                pattern = entry[1] if isinstance(entry, tuple) and len(entry) == 2 else entry
                if isinstance(pattern, re.Pattern):
                    found.setdefault(f"{module.__name__}.{name}[{index}]", pattern)
    return found


@pytest.mark.parametrize(
    ("pattern", "slow"),
    [
        (r"\s*\S+@", True),  # the reported case: spaces before "a@"
        (r"^[ \t]*<?[ \t]*x", True),
        (r"^x[ \t]*[>]?(?=[ \t]*$|[ \t]+on)", True),
        (r"(a+)+b", True),
        (r"(a|a)*b", True),
        (r"[a-z]+@", True),
        (r"[^ab@]*+@", True),
        (r"a(?=[^b]*b)", True),
        (rb"boundary\s*(?:\*\d*\*?)?\s*=", True),
        (r"<(/?)([A-Za-z][A-Za-z0-9]*)?[^<>]*>", True),
        (r"^[ \t]*+<?[ \t]*+x", False),
        (r"(?<![^ab])[^ab@]*+@[^ab]*+", False),
        (r"rcpt to:?[ \t]*+<?[ \t]*+x", False),
        (r"x(?:\r?\n[ \t][^\r\n]*)*", False),
        (r"^[ \t>]*subject[ \t]*:", False),
        (r"[A-Za-z0-9.-]{1,64}@[A-Za-z0-9-]{1,63}", False),
        (r"<(/?)([A-Za-z][A-Za-z0-9]*+)?[^<>]*+>", False),
    ],
)
def test_the_shape_check_tells_slow_patterns_from_linear_ones(pattern: str | bytes, slow: bool) -> None:
    assert bool(linearity_risks(re.compile(pattern))) == slow


def test_the_bounce_modules_keep_their_patterns_where_the_check_finds_them() -> None:
    patterns = bounce_patterns()

    assert len(patterns) >= 70
    assert "sendrail.bounces.parser._LINE_ADDRESS_RE[0]" in patterns
    assert all(f"sendrail.bounces.reasons.TEXT_RULES[{i}]" in patterns for i in range(len(reasons.TEXT_RULES)))


@pytest.mark.parametrize("name", sorted(bounce_patterns()))
def test_every_bounce_pattern_is_linear_in_its_text(name: str) -> None:
    assert linearity_risks(bounce_patterns()[name]) == []


# --- 2. the work around the patterns -----------------------------------------------------------

BOUNCES_DIR = str(Path(parser.__file__).parent)


@dataclass
class Work:
    """What one parse did: characters handed to patterns, lines of bounce-module code run."""

    pattern_chars: int = 0
    lines: int = 0


class CountingPattern:
    """A compiled pattern that adds the length of every text it reads to the work."""

    def __init__(self, pattern: re.Pattern[Any], work: Work) -> None:
        self._pattern = pattern
        self._work = work

    def _read(self, text: Any, pos: int = 0, endpos: int = sys.maxsize) -> None:
        self._work.pattern_chars += max(min(endpos, len(text)) - pos, 0)

    def search(self, text: Any, pos: int = 0, endpos: int = sys.maxsize) -> Any:
        self._read(text, pos, endpos)
        return self._pattern.search(text, pos, endpos)

    def match(self, text: Any, pos: int = 0, endpos: int = sys.maxsize) -> Any:
        self._read(text, pos, endpos)
        return self._pattern.match(text, pos, endpos)

    def fullmatch(self, text: Any, pos: int = 0, endpos: int = sys.maxsize) -> Any:
        self._read(text, pos, endpos)
        return self._pattern.fullmatch(text, pos, endpos)

    def finditer(self, text: Any, pos: int = 0, endpos: int = sys.maxsize) -> Any:
        self._read(text, pos, endpos)
        return self._pattern.finditer(text, pos, endpos)

    def findall(self, text: Any, pos: int = 0, endpos: int = sys.maxsize) -> Any:
        self._read(text, pos, endpos)
        return self._pattern.findall(text, pos, endpos)

    def sub(self, replacement: Any, text: Any, count: int = 0) -> Any:
        self._read(text)
        return self._pattern.sub(replacement, text, count)

    def split(self, text: Any, maxsplit: int = 0) -> Any:
        self._read(text)
        return self._pattern.split(text, maxsplit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pattern, name)

    def __hash__(self) -> int:
        return hash(self._pattern)

    def __eq__(self, other: object) -> bool:
        return self._pattern == (other._pattern if isinstance(other, CountingPattern) else other)


def _counting(value: Any, work: Work) -> Any:
    if isinstance(value, re.Pattern):
        return CountingPattern(value, work)
    if isinstance(value, tuple) and value and all(isinstance(v, re.Pattern) for v in value):
        return tuple(CountingPattern(v, work) for v in value)
    if isinstance(value, tuple) and value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        return tuple((a, _counting(b, work)) for a, b in value)  # reasons.TEXT_RULES
    return value


@pytest.fixture
def measure(monkeypatch: pytest.MonkeyPatch) -> Callable[[bytes], tuple[Notice, Work]]:
    """Parse a notice and count its work: every pattern of the bounce modules counts what it
    reads, those compiled while parsing too; a tracer counts lines run in the modules."""
    work = Work()
    for module in BOUNCE_MODULES:
        for name, value in list(vars(module).items()):
            counted = _counting(value, work)
            if counted is not value:
                monkeypatch.setattr(module, name, counted)
    compiling = SimpleNamespace(**{name: getattr(re, name) for name in dir(re) if not name.startswith("__")})
    compiling.compile = lambda pattern, flags=0: CountingPattern(re.compile(pattern, flags), work)
    compiling.match = lambda pattern, text, flags=0: compiling.compile(pattern, flags).match(text)
    compiling.search = lambda pattern, text, flags=0: compiling.compile(pattern, flags).search(text)
    compiling.sub = lambda pattern, repl, text, count=0, flags=0: compiling.compile(pattern, flags).sub(
        repl, text, count
    )
    for module in BOUNCE_MODULES:
        if getattr(module, "re", None) is re:
            monkeypatch.setattr(module, "re", compiling)

    def count_lines(frame: FrameType, event: str, arg: object) -> Any:
        if event == "line":
            work.lines += 1
        return count_lines

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        return count_lines if frame.f_code.co_filename.startswith(BOUNCES_DIR) else None

    def run(raw: bytes) -> tuple[Notice, Work]:
        work.pattern_chars = work.lines = 0
        previous = sys.gettrace()
        sys.settrace(trace)
        try:
            notice = parse_notice(raw)
        finally:
            sys.settrace(previous)
        return notice, Work(work.pattern_chars, work.lines)

    return run


# Pieces of hostile text: what the patterns look for, and what makes them backtrack.
ATOMS = [
    " ", "\t", "<", ">", "@", "=", ":", '"', "'", ".", "-", "(", "[", "*", "#", "&", ";", "a", "5",
    "\n", "\r\n", "\r\n\r\n", "a@", "@b", "a@b.c", "<a@b.c>", "=?", "?q?", "?=", "<a", "</", "from ",
    " on ", "...", "rcpt to:", "(expanded from ", "recipient:", "original recipient ", "smtp=",
    "<mailto:", "said: ", "550 ", "550-", "5.1.1 ", "returned message", "--", "subject:",
    "message-id:", f"{SEND_ID_HEADER}:", "following recipients:", "boundary", "content-type:",
    "diagnostic-code: ", "re:", "[1]", "<p>", "delivery to ", "user unknown ",
]


@dataclass(frozen=True)
class Hostile:
    """A hostile notice: a unit repeated to a size, and where in the notice it goes."""

    unit: str
    tail: str
    line_chars: int | None  # a line break after this many characters, or one line
    place: str

    def text(self, size: int) -> str:
        run = self.unit * max(size // len(self.unit), 1)  # whole units: the same ending at every size
        if self.line_chars is not None:
            run = "\n".join(run[i : i + self.line_chars] for i in range(0, len(run), self.line_chars))
        return run + self.tail

    def notice(self, size: int) -> bytes:
        return PLACES[self.place](self.text(size)).encode("utf-8", "surrogateescape")

    def __str__(self) -> str:
        return f"{self.place}: {self.unit!r} repeated, then {self.tail!r}, lines of {self.line_chars}"


_NOTICE_HEADERS = "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\nTo: alice@sender.example\r\n"


def _multipart(parts: list[tuple[str, str]], report: str = "") -> str:
    kind = f"multipart/report; report-type={report}" if report else "multipart/mixed"
    body = "".join(f"--b0\r\nContent-Type: {ctype}\r\n\r\n{content}\r\n" for ctype, content in parts)
    return f"{_NOTICE_HEADERS}Subject: Undelivered Mail\r\nMIME-Version: 1.0\r\n" \
           f'Content-Type: {kind}; boundary="b0"\r\n\r\n{body}--b0--\r\n'


def _nested(text: str) -> str:
    opening = "".join(f'--n{i}\r\nContent-Type: multipart/mixed; boundary="n{i + 1}"\r\n\r\n' for i in range(10))
    return (f'{_NOTICE_HEADERS}Subject: Undelivered Mail\r\nContent-Type: multipart/mixed; boundary="n0"'
            f"\r\n\r\n{opening}--n10\r\nContent-Type: text/plain\r\n\r\nDelivery has failed.\r\n{text}\r\n")


PLACES: dict[str, Callable[[str], str]] = {
    "plain text": lambda text: f"{_NOTICE_HEADERS}Subject: Undelivered Mail Returned to Sender\r\n"
    f"Content-Type: text/plain\r\n\r\nThis is the mail system. Delivery has failed.\r\n\r\n{text}\r\n",
    "plain text, no notice sender": lambda text: "From: bob@example.org\r\nSubject: failure notice\r\n"
    f"Return-Path: <>\r\n\r\nYour message could not be delivered.\r\n{text}\r\n",
    "html": lambda text: f"{_NOTICE_HEADERS}Subject: Undeliverable\r\nContent-Type: text/html\r\n\r\n"
    f"<p>Delivery has failed to these recipients:</p>{text}\r\n",
    "diagnostic code": lambda text: _multipart([
        ("text/plain", "Delivery has failed."),
        ("message/delivery-status", "Reporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; "
         f"gone@example.org\r\nAction: failed\r\nStatus: 5.0.0\r\nDiagnostic-Code: smtp; {text}"),
    ], "delivery-status"),
    "report fields": lambda text: _multipart([
        ("message/delivery-status", "Reporting-MTA: dns; mx.example.net\r\n\r\n"
         + "".join(f"Final-Recipient: rfc822; {line}\r\nAction: failed\r\n\r\n" for line in text.split("\n"))),
    ], "delivery-status"),
    "returned headers": lambda text: _multipart([
        ("text/plain", "Delivery has failed."),
        ("message/delivery-status", "Final-Recipient: rfc822; gone@example.org\r\nAction: failed"),
        ("text/rfc822-headers", f"Message-ID: <1@x>\r\nSubject: {text}"),
    ], "delivery-status"),
    "subject": lambda text: f"{_NOTICE_HEADERS}Subject: {text}\r\n\r\nDelivery to gone@example.org failed.\r\n",
    "failed recipients header": lambda text: f"{_NOTICE_HEADERS}X-Failed-Recipients: {text}\r\n"
    "Subject: failure notice\r\n\r\nDelivery failed.\r\n",
    "many headers": lambda text: "".join(f"X-Hostile-{i}: {line}\r\n" for i, line in enumerate(text.split("\n")))
    + f"{_NOTICE_HEADERS}Subject: failure notice\r\n\r\nDelivery failed for gone@example.org.\r\n",
    "nested parts": _nested,
    "SES notification": lambda text: '{"notificationType": "Bounce", "bounce": {"bouncedRecipients": '
    f'[{{"emailAddress": "gone@example.org", "diagnosticCode": "{text}"}}]}}}}',
}


def hostile_notices() -> st.SearchStrategy[Hostile]:
    atoms = st.lists(st.sampled_from(ATOMS), min_size=1, max_size=3).map("".join)
    return st.builds(
        Hostile,
        unit=atoms,
        tail=st.lists(st.sampled_from(ATOMS), max_size=2).map("".join),
        line_chars=st.sampled_from([None, None, 1, 7, 80, 998]),
        place=st.sampled_from(sorted(PLACES)),
    )


def assert_well_formed(notice: Notice) -> None:
    assert isinstance(notice, Notice)
    assert (notice.problem is not None) == (notice.kind is NoticeKind.UNPARSEABLE)
    if notice.kind is NoticeKind.BOUNCE:
        assert notice.recipients
    for recipient in notice.recipients:
        assert "@" in recipient.address
        assert recipient.hard == (notice.kind is NoticeKind.BOUNCE and recipient.reason in HARD_REASONS)


def assert_linear(measure: Callable[[bytes], tuple[Notice, Work]], hostile: Hostile, size: int = SIZE) -> None:
    small_notice, small = measure(hostile.notice(size))
    large_notice, large = measure(hostile.notice(GROWTH * size))

    assert_well_formed(small_notice)
    assert_well_formed(large_notice)
    assert large.pattern_chars <= ALLOWED_GROWTH * small.pattern_chars, f"pattern reads grow: {hostile}"
    assert large.lines <= ALLOWED_GROWTH * small.lines, f"parser lines grow: {hostile}"


REPORTED = [
    Hostile(" ", "a@", None, "plain text"),  # one line of spaces, then "a@"
    Hostile("\t", "<mailto:a@b.example>", None, "plain text"),
    Hostile("a@b.", "", None, "plain text"),
    Hostile("u@example.org ", "", None, "plain text"),
    Hostile(" ", "a@b.c", None, "plain text"),
    Hostile("recipient:", " a@", None, "plain text"),
    Hostile("returned message", " x", 998, "plain text"),
    Hostile("=?c?q? ", "", None, "diagnostic code"),
    Hostile("a", "", None, "html"),
    Hostile(" ", "x", None, "subject"),
    Hostile("Diagnostic-Code: smtp; 550 x\n", "", None, "diagnostic code"),
    Hostile(" x", "", 2, "report fields"),
]


@pytest.mark.parametrize("hostile", REPORTED, ids=str)
def test_work_on_reported_shapes_grows_linearly(
    measure: Callable[[bytes], tuple[Notice, Work]], hostile: Hostile
) -> None:
    assert_linear(measure, hostile)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(hostile=hostile_notices())
def test_work_on_hostile_notices_grows_linearly(
    measure: Callable[[bytes], tuple[Notice, Work]], hostile: Hostile
) -> None:
    assert_linear(measure, hostile)


# --- 3. large hostile notices ------------------------------------------------------------------

# As much hostile text as the parser reads (its end is read too), and more than that.
TEXT_SIZE = parser.MAX_TEXT_CHARS - 1024


@pytest.mark.timeout(60)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile=hostile_notices(), size=st.sampled_from([TEXT_SIZE, 256 * 1024]))
def test_large_hostile_notices_are_read(hostile: Hostile, size: int) -> None:
    assert_well_formed(parse_notice(hostile.notice(size)))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("hostile", REPORTED, ids=str)
def test_large_notices_of_reported_shapes_are_read(hostile: Hostile) -> None:
    assert_well_formed(parse_notice(hostile.notice(TEXT_SIZE)))
