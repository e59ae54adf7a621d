"""Bounce parser: reads one message from a sender's inbox, as bytes, into a Notice.

Structure is trusted before wording: an RFC 6522 report (RFC 3464 delivery status, RFC 5965
feedback report) or an Amazon SES JSON record (ses.py) says what it is; plain-text bounces
(Exchange, Domino, Exim, qmail, Sendmail, older Gmail, ...) are read by general rules: who sent
the notice and how it is worded (wording.py, in the languages mail systems localise into),
which lines name an address, which SMTP codes follow it.

The parser never raises and bounds its work, so that hostile input cannot make it slow:
- input is cut at MAX_MESSAGE_BYTES, and before the boundary or Content-Type declaration past
  MAX_BOUNDARY_DECLARATIONS or MAX_CONTENT_TYPE_DECLARATIONS (the stdlib parser checks every
  line against every open boundary, so nesting costs lines x depth);
- Content-Type fields are cut to MAX_CONTENT_TYPE_BYTES (the stdlib's parameter parsing is
  quadratic in their length);
- the MIME walk stops at MAX_MIME_DEPTH and MAX_PARTS, text at MAX_TEXT_CHARS;
- a header value whose encoded words leave more than MAX_UNCLOSED_ENCODED_WORDS open stays
  encoded (the stdlib's RFC 2047 decoder reads the rest of the line again for each); text
  declared in punycode, which no mail charset is, reads as UTF-8 (its decoder is quadratic);
- every pattern and loop here reads its text in time linear in its length: quantifiers are
  bounded or possessive, lines are read one at a time, each segment of a text once.

It uses email.policy.compat32: its header access never raises on malformed values
(email.policy.default parses structured headers when they are read, and raises on some broken
ones), and undecodable bytes stay surrogate-escaped until decoded here.
"""

import base64
import binascii
import codecs
import email
import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from email.errors import MessageError
from email.header import decode_header, make_header
from email.message import Message
from email.parser import Parser
from email.policy import compat32
from typing import Final

from sendrail.bounces.notice import FailedRecipient, Notice, NoticeKind, OriginalMessage
from sendrail.bounces.reasons import Reason, classify, find_statuses, is_hard
from sendrail.bounces.ses import read_ses_notification
from sendrail.bounces.wording import (
    AUTO_REPLY_SUBJECT_RE,
    BOUNCE_PHRASE_RE,
    BOUNCE_SUBJECT_RE,
    DELAY_PHRASE_RE,
    DELAY_SUBJECT_RE,
    FAILURE_SUBJECT_RE,
    MAILER_DAEMON_RE,
    ORIGINAL_MARKER_RE,
    PERMANENT_PHRASE_RE,
    REPLY_SUBJECT_RE,
    SUCCESS_PHRASE_RE,
    SUCCESS_SUBJECT_RE,
    SYSTEM_SENDER_RE,
)
from sendrail.mail.headers import SEND_ID_HEADER

MAX_MESSAGE_BYTES: Final = 512 * 1024
MAX_BOUNDARY_DECLARATIONS: Final = 12
MAX_CONTENT_TYPE_DECLARATIONS: Final = 64
MAX_CONTENT_TYPE_BYTES: Final = 1024
MAX_MIME_DEPTH: Final = 8
MAX_PARTS: Final = 64
MAX_TEXT_CHARS: Final = 128 * 1024
MAX_TEXT_LINES: Final = 4000
MAX_HEADER_CHARS: Final = 4096
MAX_RECIPIENTS: Final = 100
MAX_DIAGNOSTIC_CHARS: Final = 500
MAX_SEGMENT_CHARS: Final = 4000
MAX_REFERENCES: Final = 50
MAX_UNCLOSED_ENCODED_WORDS: Final = 16

# RFC 3464 section 2 (message/delivery-status), RFC 6533 section 6 (its UTF-8 form).
_DELIVERY_STATUS_TYPES: Final = frozenset({"message/delivery-status", "message/global-delivery-status"})
# RFC 6522 section 4: the returned content is message/rfc822, or text/rfc822-headers when
# only the headers come back (some servers write message/rfc822-headers); RFC 6532 global forms.
_ORIGINAL_MESSAGE_TYPES: Final = frozenset({"message/rfc822", "message/global"})
_ORIGINAL_HEADERS_TYPES: Final = frozenset(
    {
        "text/rfc822-headers",
        "message/rfc822-headers",
        "text/global-headers",
        "message/global-headers",
    }
)
_FEEDBACK_REPORT_TYPE: Final = "message/feedback-report"  # RFC 5965 section 3
_MDN_TYPES: Final = frozenset({"message/disposition-notification", "message/global-disposition-notification"})

# RFC 3464 section 2.3.3: the Action field's values.
_ACTION_FAILED: Final = "failed"
_ACTION_DELAYED: Final = "delayed"
_ACTIONS_DELIVERED: Final = frozenset({"delivered", "relayed", "expanded"})

# Local parts that name mail systems, never a recipient sendrail wrote to (RFC 5321 section 4.5.1,
# RFC 2142 section 5).
_SYSTEM_LOCAL_PARTS: Final = frozenset(
    {
        "mailer-daemon",
        "mailer_daemon",
        "mailerdaemon",
        "mail-daemon",
        "maildaemon",
        "postmaster",
        "abuse",
        "hostmaster",
    }
)

# Every pattern here costs time linear in the text it reads (hostile mail must not make the
# parser slow): quantifiers are bounded, or possessive (`*+`) where a run could be split between
# two quantifiers or given back before an alternative fails, which would cost its length squared.
# A local part is at most 64 characters, a domain label 63 (RFC 5321 section 4.5.3.1).
_ADDRESS_PATTERN: Final = (
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9][A-Za-z0-9-]{0,62}(?:\.[A-Za-z0-9-]{1,63}){1,8}"
)
_ADDRESS_RE: Final = re.compile(_ADDRESS_PATTERN)
_LOOSE_ADDRESS_RE: Final = re.compile(r"[^\s@<>\"(),;:\[\]]{1,64}@[^\s@<>\"(),;:\[\]]{1,255}")
# An address that opens a line, alone or followed by what bounce formats put after it:
# "  user@x" (Exim, Gmail), "<user@x>: host ... said" (Postfix, qmail), "<user@x>... User unknown"
# (Sendmail), "'user@x' on <date>" (older Exchange); "on" and "-" need a blank before them.
_LINE_ADDRESS_RE: Final = re.compile(
    rf"^[ \t>]*+[<\"'(\[]?[ \t]*+({_ADDRESS_PATTERN})[ \t]*+"
    r"(?:[>\"')\]](?=[ \t]*+(?:$|[:;,(\[<])|\.\.\.|[ \t]++(?:on[ \t]|-))"
    r"|(?=$|[:;,(\[<]|\.\.\.)|(?<=[ \t])(?=on[ \t]|-))"
)
_EXPANDED_FROM_RE: Final = re.compile(
    rf"\((?:expanded|generated) from:?[ \t]*+<?[ \t]*+({_ADDRESS_PATTERN})", re.I
)
# An address a line labels as the recipient: Oracle Communications Messaging Server's
# "Recipient address:" / "Original address:", and the labels other systems and languages use.
_LABELLED_ADDRESS_RE: Final = re.compile(
    r"^[ \t>*-]*((?:(?:original|final|failed|invalid|unknown|bad|intended|rejected)[ \t-]+"
    r"(?:e-?mail[ \t]+)?address)|(?:(?:original|final|failed|invalid|unknown|bad|intended|rejected)[ \t-]*)?"
    r"(?:recipient|rcpt|addressee|destinataire|empf[äa]nger|destinatario|destinat[áa]rio|ontvanger"
    r"|получатель|адрес получателя|宛先)(?:'s)?(?:[ \t]+(?:address|adresse|e-?mail))?)"
    r"[ \t]*+(?:\(s\))?[ \t]*+[:=][ \t]*+[<\"']?[ \t]*+"
    rf"({_ADDRESS_PATTERN})",
    re.I,
)
# X.400 and Exchange 5.5 write the SMTP address inside an O/R name: "...;dda:SMTP=user@x;".
_X400_ADDRESS_RE: Final = re.compile(rf"\b(?:dda:)?(?:smtp|rfc-?822)=[ \t]*<?({_ADDRESS_PATTERN})", re.I)
# Exchange 2007 and later name a recipient "Display Name<mailto:user@x>" on a line of its own.
_MAILTO_LINE_RE: Final = re.compile(rf"^[^<>@\n]{{0,80}}<mailto:({_ADDRESS_PATTERN})>[ \t]*$", re.I)
# "The following recipients ...:" then bare local parts (AOL writes screen names alone).
_FOLLOWING_HEADING_RE: Final = re.compile(
    r"following (?:recipients?|addresses|address(?:\(es\))?|users?|screen ?names?)\b[^\n]{0,120}:[ \t]*$",
    re.I,
)
_BARE_LOCAL_PART_RE: Final = re.compile(r"^[ \t]+([A-Za-z0-9][A-Za-z0-9._%+-]{0,63})[ \t]*$")
_FROM_BEFORE_RE: Final = re.compile(r"\bfrom\W{0,3}$", re.I)
_FROM_BEFORE_CHARS: Final = 7  # the longest text _FROM_BEFORE_RE matches: "from" and 3 more
_RCPT_TO_RE: Final = re.compile(rf"rcpt to:?[ \t]*+<?[ \t]*+({_ADDRESS_PATTERN})", re.I)
_FAILURE_LINE_RE: Final = re.compile(
    r"fail|undeliver|not (?:be )?delivered|could ?n[o']?t|unable|invalid|unknown|reject|refused"
    r"|error|denied|not found|does ?n[o']?t exist|no such|recipient|addressee|addressed",
    re.I,
)
# Header-like lines in a notice's text that name the original's people, not failed recipients.
_HEADER_LINE_RE: Final = re.compile(
    r"^[ \t>]*(?:message-id|in-reply-to|references|from|sender|reply-to|return-path|received"
    r"|dkim-signature|delivered-to|x-original-message-id)[ \t]*:",
    re.I,
)
# A quoted header block has three or more header lines, two of them common ones, and one
# that only a message's own header section carries (not a notice's "To: / Subject: / Sent:").
_QUOTED_HEADER_NAMES: Final = frozenset(
    {"to", "cc", "subject", "reply-to", "delivered-to", "x-mailer", "sender"}
)
_MESSAGE_HEADER_NAMES: Final = frozenset(
    {
        "received",
        "return-path",
        "message-id",
        "date",
        "from",
        "mime-version",
        "content-type",
        "dkim-signature",
    }
)
_HEADER_NAME_RE: Final = re.compile(r"^([A-Za-z][A-Za-z0-9-]{0,60}):")

_STATUS_RE: Final = re.compile(r"(?<![\w.])[45]\.\d{1,3}\.\d{1,3}(?!\.?\d)")
# SMTP basic reply codes (RFC 5321 section 4.2) as bounce texts write them: before an enhanced
# status ("550 5.1.1", "550-5.1.1", "#550 5.1.1"), after the verb that reports them ("said: 550"),
# or opening a line of the server's answer.
_REPLY_CODE_RES: Final = (
    re.compile(r"(?<![\w.])([45]\d\d)(?=[ -]+[245]\.\d{1,3}\.\d{1,3}(?!\.?\d))"),
    re.compile(r"(?:said|returned|error|response|reply|answered|reason)\W{0,6}([45]\d\d)\b", re.I),
    re.compile(r"^[ \t#]*([45]\d\d)[ -](?=[A-Za-z<])", re.M),
)
_MESSAGE_ID_RE: Final = re.compile(r"<([^<>\s]{1,990})>")
_SEND_ID_RE: Final = re.compile(
    rf"^[ \t>]*{re.escape(SEND_ID_HEADER)}[ \t]*:[ \t]*(?:\r?\n[ \t]+)?([^\s<>;\"']{{1,200}})",
    re.I | re.M,
)
_QUOTED_MESSAGE_ID_RE: Final = re.compile(
    r"^[ \t>]*message-id[ \t]*:[ \t]*(?:\r?\n[ \t]+)?(<[^<>\s]{1,990}>)", re.I | re.M
)
# The subject from its first non-blank character; a blank one reads as its last blank.
_QUOTED_SUBJECT_RE: Final = re.compile(
    r"^[ \t>]*subject[ \t]*:(?:[ \t](?=[^\r\n]))*+([^\r\n]{1,998})", re.I | re.M
)

# Headers that only mail systems set on their notices: Exim's X-Failed-Recipients (also used
# by Gmail), Exchange's and Office 365's NDR marker.
_BOUNCE_HEADERS: Final = ("x-failed-recipients", "x-ms-exchange-message-is-ndr")
# Headers responders set instead of RFC 3834 Auto-Submitted.
_AUTO_REPLY_HEADERS: Final = ("x-autoreply", "x-autorespond", "x-autoresponse")
# A permanent failure code in prose: an SMTP 5yz reply (RFC 5321 section 4.2.1) or an
# RFC 3463 5.y.z status.
_FAILURE_REPLY_RE: Final = re.compile(
    r"(?<![\w.,:/-])(?:5[0-5]\d[ -](?=[A-Za-z<#\[(]|[245]\.\d)|5\.\d{1,3}\.\d{1,3}(?![.\d]))"
)
# PowerMTA's X-PowerMTA-BounceCategory per-recipient DSN field (PowerMTA User's Guide,
# "bounce categories"): its classification of the remote reply, kept where it is specific.
_POWERMTA_CATEGORIES: Final[dict[str, Reason]] = {
    "bad-mailbox": Reason.USERUNKNOWN,
    "bad-domain": Reason.HOSTUNKNOWN,
    "inactive-mailbox": Reason.SUSPEND,
    "quota-issues": Reason.MAILBOXFULL,
    "spam-related": Reason.SPAMDETECTED,
    "virus-related": Reason.VIRUSDETECTED,
    "policy-related": Reason.POLICYVIOLATION,
    "content-related": Reason.CONTENTERROR,
    "message-expired": Reason.EXPIRED,
    "no-answer-from-host": Reason.NETWORKERROR,
    "bad-connection": Reason.NETWORKERROR,
    "routing-errors": Reason.NETWORKERROR,
    "relaying-issues": Reason.NORELAYING,
    "protocol-errors": Reason.SYNTAXERROR,
    "invalid-sender": Reason.REJECTED,
    "bad-configuration": Reason.SYSTEMERROR,
}
_BOUNDARY_DECLARATION_RE: Final = re.compile(rb"boundary\s*+(?:\*\d*\*?)?\s*+=", re.I)
_CONTENT_TYPE_DECLARATION_RE: Final = re.compile(rb"content-type", re.I)
_CONTENT_TYPE_FIELD_RE: Final = re.compile(
    rb"^content-type[ \t]*:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*", re.I | re.M
)
_HTML_TAG_RE: Final = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*+)?[^<>]*+>")
_HTML_BLOCK_TAGS: Final = frozenset({"br", "p", "div", "tr", "li", "table", "h1", "h2", "h3", "pre"})
_HTML_SKIPPED_TAGS: Final = frozenset({"script", "style", "head", "title"})
_PARAGRAPH_BREAK_RE: Final = re.compile(r"\r?\n[ \t]*\r?\n")
# The start of an SMTP reply's first line, "550-5.1.1 " or "550 " (RFC 5321 section 4.2.1).
_REPLY_OPENING_RE: Final = re.compile(r"([245]\d\d)[ -]((?:[245]\.\d{1,3}\.\d{1,3} )?)")
_CONTROL_CHARS_RE: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# The opening of an RFC 2047 encoded word, "=?charset?Q?" or "=?charset?B?" (section 2).
_ENCODED_WORD_OPENING_RE: Final = re.compile(r"=\?[^?]*+\?[BbQq]\?")
# Text codecs that are no mail charset and whose decoders are quadratic: Python's punycode
# decoder inserts each character into the string decoded so far.
_UNREAD_CHARSETS: Final = frozenset({"punycode"})


Block = list[tuple[str, str]]
"""One block of "Name: value" fields (RFC 3464 section 2.1), names lowercased, in order."""


@dataclass
class _Content:
    """What the MIME walk found: reports, readable text and the returned original."""

    delivery_reports: list[list[Block]] = field(default_factory=list)
    feedback_reports: list[list[Block]] = field(default_factory=list)
    disposition_reports: list[list[Block]] = field(default_factory=list)
    plain_texts: list[str] = field(default_factory=list)
    html_texts: list[str] = field(default_factory=list)
    original_headers: Message | None = None
    returned_message: Message | None = None


@dataclass(frozen=True)
class _Texts:
    """The notice's readable text, split where it starts quoting the original."""

    human: str
    quoted: str


@dataclass(frozen=True)
class _Reply:
    """What a text says about a failure, read once however many recipients it is about."""

    has_code: bool  # an RFC 3463 status or an SMTP reply code
    status: str | None  # the first status
    reply_code: str | None  # the first reply code
    paragraphs: tuple[str, ...]  # where the server's words are, compacted

    def diagnostic(self, address: str) -> str | None:
        """The server's words: the first paragraph that says more than the address."""
        leading_address = re.compile(rf"^[\s<>\"']*{re.escape(address)}[>\"']*[\s:;,.]*", re.I)
        for paragraph in self.paragraphs:
            words = _compact(leading_address.sub("", paragraph))
            if words:
                return words
        return None


@dataclass(frozen=True)
class _DsnRecipient:
    """One RFC 3464 per-recipient block, reduced to what sendrail uses."""

    address: str
    action: str
    status: str | None
    diagnostic: str | None
    remote_mta: str | None
    category: Reason | None = None  # what the sending MTA's own bounce category says


def parse_notice(raw: bytes) -> Notice:
    """Read a message into a Notice; never raises, whatever the bytes."""
    try:
        return _read(raw)
    except Exception as error:  # the watcher must get a Notice for every message it reads
        return _unparseable(f"parser failed: {type(error).__name__}")


def _read(raw: bytes) -> Notice:
    data = _bounded(bytes(raw[:MAX_MESSAGE_BYTES]))
    if not data.strip():
        return _unparseable("empty message")
    if data.lstrip()[:1] == b"{":  # a bare Amazon SES notification, as SNS posts it
        read = read_ses_notification(data.decode("utf-8", errors="replace"))
        if read is not None:
            return Notice(read[0], tuple(read[1]), read[2], (), None)
    message = email.message_from_bytes(data, policy=compat32)
    if not message.keys():
        return _unparseable("no header section")
    return _read_message(message, unwrap=True)


def _read_message(message: Message, *, unwrap: bool) -> Notice:
    content = _walk(message)
    wrapped = content.returned_message
    if (
        unwrap
        and wrapped is not None
        and not (content.delivery_reports or content.feedback_reports)
        and _report_type(wrapped) == "delivery-status"
        and _reads_as_notice(message, _split_texts(content.plain_texts))
    ):
        # Some gateways wrap the server's report in a notice of their own: read the report.
        report = _read_message(wrapped, unwrap=False)
        return replace(report, references=_references(message) or report.references)
    texts = _split_texts(content.plain_texts or content.html_texts)
    original = _original(content, texts)
    references = _references(message)

    def notice(kind: NoticeKind, recipients: Iterable[FailedRecipient] = ()) -> Notice:
        return Notice(kind, tuple(recipients), original, references, None)

    for text in content.plain_texts[:2]:  # an Amazon SES notification sent by SNS email
        read = read_ses_notification(text) if text.lstrip()[:1] == "{" else None
        if read is not None:
            return Notice(read[0], tuple(read[1]), read[2], references, None)
    report_type = _report_type(message)
    if report_type == "feedback-report" or content.feedback_reports:
        return notice(NoticeKind.COMPLAINT, _complainants(content))
    reported = _from_delivery_reports(content, texts)
    if reported is not None:
        return notice(*reported)
    rejected = _rejections(content, texts)
    if rejected:
        return notice(NoticeKind.BOUNCE, rejected)
    if report_type == "disposition-notification" or content.disposition_reports:
        return notice(NoticeKind.OTHER)  # a read receipt (RFC 8098), not an auto-reply
    from_mail_system = bool(content.delivery_reports) or _sent_by_mail_system(message, texts)
    if not from_mail_system and _is_auto_reply(message):
        responder = _header_addresses(message, "from")[:1]
        return notice(
            NoticeKind.AUTO_REPLY,
            (
                FailedRecipient(address, None, None, None, Reason.VACATION.value, False)
                for address in responder
            ),
        )
    if from_mail_system or _looks_like_bounce(message, texts):
        kind = _plain_kind(message, texts)
        recipients = _text_recipients(message, content, texts, kind)
        if not recipients:
            return Notice(
                NoticeKind.UNPARSEABLE,
                (),
                original,
                references,
                "reads as a delivery failure but names no recipient",
            )
        return notice(kind, recipients)
    return notice(NoticeKind.OTHER)


def _unparseable(problem: str) -> Notice:
    return Notice(NoticeKind.UNPARSEABLE, (), OriginalMessage(None, None, None), (), problem)


def _bounded(data: bytes) -> bytes:
    """Cut hostile input before the declaration that would make parsing slow or too deep."""
    end = len(data)
    for pattern, limit in (
        (_BOUNDARY_DECLARATION_RE, MAX_BOUNDARY_DECLARATIONS),
        (_CONTENT_TYPE_DECLARATION_RE, MAX_CONTENT_TYPE_DECLARATIONS),
    ):
        for count, match in enumerate(pattern.finditer(data, 0, end), start=1):
            if count > limit:
                end = data.rfind(b"\n", 0, match.start()) + 1
                break
    return _CONTENT_TYPE_FIELD_RE.sub(lambda field: field.group()[:MAX_CONTENT_TYPE_BYTES], data[:end])


# --- MIME walk ---------------------------------------------------------------------------------


def _walk(message: Message) -> _Content:
    """Collect reports and readable text; the returned original is recorded, not entered."""
    content = _Content()
    stack: list[tuple[Message, int]] = [(message, 0)]
    parts_seen = 0
    while stack and parts_seen < MAX_PARTS:
        part, depth = stack.pop()
        parts_seen += 1
        content_type = part.get_content_type()
        if content_type in _DELIVERY_STATUS_TYPES:
            content.delivery_reports.append(_field_blocks(part))
        elif content_type == _FEEDBACK_REPORT_TYPE:
            content.feedback_reports.append(_field_blocks(part))
        elif content_type in _MDN_TYPES:
            content.disposition_reports.append(_field_blocks(part))
        elif content_type in _ORIGINAL_MESSAGE_TYPES or content_type in _ORIGINAL_HEADERS_TYPES:
            if content.original_headers is None:
                content.original_headers = _returned_headers(part)
                if content_type in _ORIGINAL_MESSAGE_TYPES:
                    content.returned_message = content.original_headers
        elif part.is_multipart():
            if depth < MAX_MIME_DEPTH:
                stack.extend((child, depth + 1) for child in reversed(_children(part)))
        elif content_type == "text/plain" and not _is_attachment(part):
            content.plain_texts.append(_decoded_text(part))
        elif content_type == "text/html" and not _is_attachment(part):
            content.html_texts.append(_html_text(_decoded_text(part)))
    return content


def _children(part: Message) -> list[Message]:
    """A multipart's or message/*'s parts. Text payloads are read only through _decoded_text:
    compat32's get_payload() decodes 8-bit text with the declared charset and raises on some."""
    if not part.is_multipart():
        return []
    return [child for child in part.get_payload() if isinstance(child, Message)]


def _is_attachment(part: Message) -> bool:
    return str(part.get("content-disposition", "")).strip().lower().startswith("attachment")


def _decoded_text(part: Message) -> str:
    """The part's text, transfer encoding and charset undone; unknown charsets read as UTF-8."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    payload = payload[: MAX_TEXT_CHARS * 4]
    charset = part.get_content_charset() or "utf-8"
    try:
        if codecs.lookup(charset).name in _UNREAD_CHARSETS:
            charset = "utf-8"
        text = payload.decode(charset, errors="replace")
    except (LookupError, UnicodeError, TypeError, ValueError):
        text = payload.decode("utf-8", errors="replace")
    return text[:MAX_TEXT_CHARS]


def _html_text(markup: str) -> str:
    """Text of an HTML part: line breaks where blocks end, scripts and styles dropped.

    A linear scan of tags, because html.parser is quadratic on unclosed tags (hostile input).
    """
    chunks: list[str] = []
    skipping: str | None = None
    position = 0
    for tag in _HTML_TAG_RE.finditer(markup):
        if skipping is None:
            chunks.append(_html_words(markup[position : tag.start()]))
        name, closing = (tag.group(2) or "").lower(), tag.group(1) == "/"
        if skipping is not None:
            skipping = None if closing and name == skipping else skipping
        elif name in _HTML_SKIPPED_TAGS and not closing:
            skipping = name
        elif name in _HTML_BLOCK_TAGS:
            chunks.append("\n")
        position = tag.end()
    if skipping is None:
        chunks.append(_html_words(markup[position:]))
    return "".join(chunks)


def _html_words(data: str) -> str:
    """HTML line breaks come from tags; leading space is kept as indentation."""
    words = " ".join(html.unescape(data).split())
    return f" {words}" if words and data[:1].isspace() else words


def _returned_headers(part: Message) -> Message | None:
    """The returned original's header section (RFC 6522 section 4), if it has one."""
    if part.is_multipart():
        headers = next(iter(_children(part)), None)
    else:
        headers = Parser(policy=compat32).parsestr(_decoded_text(part), headersonly=True)
    return headers if headers is not None and headers.keys() else None


def _field_blocks(part: Message) -> list[Block]:
    """The blocks of a report part, whether the stdlib parsed them as messages or left text."""
    if part.is_multipart():
        text = "\n\n".join(_flattened(child) for child in _children(part))
        if str(part.get("content-transfer-encoding", "")).strip().lower() == "base64":
            text = _base64_text(text)
    else:
        text = _decoded_text(part)
    return _parse_blocks(text)


def _flattened(message: Message) -> str:
    lines = [f"{name}: {_text(value)}" for name, value in message.items()]
    body = "" if message.is_multipart() else _decoded_text(message)
    if body.strip():
        lines.extend(["", body])
    return "\n".join(lines)


def _base64_text(text: str) -> str:
    try:
        return base64.b64decode("".join(text.split()), validate=False).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return text


def _parse_blocks(text: str) -> list[Block]:
    """Split "Name: value" text into blank-line separated blocks (RFC 3464 section 2.1)."""
    blocks: list[Block] = []
    # Each value is kept in pieces and joined once its block ends: joining a folded line onto
    # the value each time would copy the value once per line.
    current: list[tuple[str, list[str]]] = []
    value_chars = 0  # the last field's value so far, joined
    for line in text.splitlines()[:MAX_TEXT_LINES]:
        if not line.strip():
            if current:
                blocks.append(_joined_fields(current))
                current = []
        elif line[0] in " \t" and current:
            if value_chars < MAX_HEADER_CHARS:  # a full value takes no more
                piece = line.strip()
                current[-1][1].append(piece)
                value_chars += 1 + len(piece)
        else:
            name, separator, value = line.partition(":")
            name = name.strip().lower()
            if separator and name and " " not in name:
                piece = value.strip()[:MAX_HEADER_CHARS]
                current.append((name, [piece]))
                value_chars = len(piece)
    if current:
        blocks.append(_joined_fields(current))
    return blocks


def _joined_fields(fields: list[tuple[str, list[str]]]) -> Block:
    return [(name, " ".join(pieces)[:MAX_HEADER_CHARS]) for name, pieces in fields]


def _first_field(block: Block, name: str) -> str | None:
    return next((value for field_name, value in block if field_name == name), None)


# --- headers -----------------------------------------------------------------------------------


def _text(value: object) -> str:
    """A header value as text: compat32 hands back Header objects for raw 8-bit values."""
    text = str(value)[:MAX_HEADER_CHARS]
    if "=?" not in text or _unclosed_encoded_words(text) > MAX_UNCLOSED_ENCODED_WORDS:
        return text
    try:  # RFC 2047 encoded words
        words = decode_header(text)
        if any(charset and _codec_name(charset) in _UNREAD_CHARSETS for _, charset in words):
            return text
        return str(make_header(words))[:MAX_HEADER_CHARS]
    except (MessageError, LookupError, UnicodeError, ValueError):  # unknown or malformed charset
        return text


def _codec_name(charset: str) -> str | None:
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return None


def _unclosed_encoded_words(text: str) -> int:
    """Encoded words opened on a line that no "?=" after them closes: the stdlib's decoder
    reads the rest of the line for each, and real ones are closed (RFC 2047 section 2)."""
    unclosed = 0
    for line in text.splitlines():
        last_close = line.rfind("?=")
        openings = _ENCODED_WORD_OPENING_RE.finditer(line)
        unclosed += sum(1 for opening in openings if opening.end() > last_close)
    return unclosed


def _header(message: Message, name: str) -> str:
    value = message.get(name)
    return "" if value is None else _text(value)


def _header_addresses(message: Message, name: str) -> list[str]:
    values = message.get_all(name) or []
    return [address for value in values for address in _addresses_in(str(value)[:MAX_HEADER_CHARS])]


def _addresses_in(text: str) -> list[str]:
    found = (_normal_address(match.group()) for match in _ADDRESS_RE.finditer(text))
    return [address for address in found if address is not None]


def _normal_address(value: str) -> str | None:
    """A lowercased addr-spec from an address as notices write it ("<X@Y>", "'x@y'", "x@y.")."""
    address = value.strip().strip("<>\"'").strip().rstrip(".").lower()
    local, _, domain = address.rpartition("@")
    local = local.lstrip(".'").rstrip("'")  # punctuation of the sentence around it
    domain = domain.strip(".-")
    if not local or not domain or "." not in domain or len(local) + len(domain) > 253:
        return None
    if local.endswith(".") or ".." in local:  # not a dot-atom (RFC 5322 section 3.4.1): redacted
        return None
    if not _LOOSE_ADDRESS_RE.fullmatch(f"{local}@{domain}"):
        return None
    return f"{local}@{domain}"


def _typed_address(value: str | None) -> str | None:
    """The address of an RFC 3464 "address-type; address" field (section 2.3.1, 2.3.2)."""
    if not value:
        return None
    _, separator, address = value.partition(";")
    return _normal_address(address if separator else value)


def _report_type(message: Message) -> str:
    value = message.get_param("report-type") if message.get_content_type() == "multipart/report" else None
    return value.strip().lower() if isinstance(value, str) else ""


def _message_id(value: str) -> str | None:
    """A Message-ID normalised to "<id>" (RFC 5322 section 3.6.4)."""
    match = _MESSAGE_ID_RE.search(value)
    if match:
        return f"<{match.group(1)}>"
    bare = value.strip()
    if bare and "@" in bare and not any(character.isspace() for character in bare) and len(bare) < 990:
        return f"<{bare.strip('<>')}>"
    return None


def _references(message: Message) -> tuple[str, ...]:
    """Message-IDs in the notice's In-Reply-To and References (RFC 5322 section 3.6.4)."""
    found: dict[str, None] = {}
    for name in ("in-reply-to", "references"):
        for value in message.get_all(name) or []:
            for match in _MESSAGE_ID_RE.finditer(str(value)[:MAX_HEADER_CHARS]):
                found.setdefault(f"<{match.group(1)}>", None)
    return tuple(found)[:MAX_REFERENCES]


# --- the original ------------------------------------------------------------------------------


def _split_texts(parts: list[str]) -> _Texts:
    human: list[str] = []
    quoted: list[str] = []
    for text in parts:
        cut = _quote_start(text)
        human.append(text[:cut])
        quoted.append(text[cut:])
    return _Texts("\n\n".join(human)[:MAX_TEXT_CHARS], "\n\n".join(quoted)[:MAX_TEXT_CHARS])


def _quote_start(text: str) -> int:
    """Where a bounce's text starts quoting the original: a marker line, or its header block."""
    marker = ORIGINAL_MARKER_RE.search(text)
    end = marker.start() if marker else len(text)
    position = 0
    run_start, run_length, common, own = 0, 0, 0, 0
    for line in text[:end].splitlines(keepends=True)[:MAX_TEXT_LINES]:
        name = _HEADER_NAME_RE.match(line)
        if name:
            if run_length == 0:
                run_start = position
            run_length += 1
            common += name.group(1).lower() in _QUOTED_HEADER_NAMES
            own += name.group(1).lower() in _MESSAGE_HEADER_NAMES
            if run_length >= 3 and common + own >= 2 and own >= 1:
                return run_start
        elif not (run_length and line[:1] in (" ", "\t")):  # folded lines continue a header
            run_length, common, own = 0, 0, 0
        position += len(line)
    return end


def _original(content: _Content, texts: _Texts) -> OriginalMessage:
    """The bounced email as the notice quotes it: its returned headers, else the quoted text."""
    message_id = subject = send_id = None
    headers = content.original_headers
    if headers is not None:
        message_id = _message_id(_header(headers, "message-id"))
        subject = _header(headers, "subject").strip() or None
        send_id = _send_id_value(_header(headers, SEND_ID_HEADER))
    if message_id is None:
        quoted = _QUOTED_MESSAGE_ID_RE.search(texts.quoted)
        message_id = quoted.group(1) if quoted else _reported_message_id(content)
    if subject is None:
        quoted = _QUOTED_SUBJECT_RE.search(texts.quoted)
        subject = _text(quoted.group(1)).strip() if quoted else None
    if send_id is None:
        found = _SEND_ID_RE.search(texts.quoted) or _SEND_ID_RE.search(texts.human)
        send_id = found.group(1) if found else None
    return OriginalMessage(message_id, send_id, subject)


def _send_id_value(value: str) -> str | None:
    tokens = value.split()
    if not tokens:
        return None
    return tokens[0].strip("<>\"';")[:200] or None


def _reported_message_id(content: _Content) -> str | None:
    """Gmail names the original in the report's per-message fields (X-Original-Message-ID)."""
    for blocks in content.delivery_reports:
        for block in blocks:
            value = _first_field(block, "x-original-message-id")
            if value:
                return _message_id(value)
    return None


# --- delivery status reports -------------------------------------------------------------------


def _from_delivery_reports(
    content: _Content, texts: _Texts
) -> tuple[NoticeKind, list[FailedRecipient]] | None:
    """What an RFC 3464 report says: only Action: failed is a bounce (RFC 3464 section 2.3.3)."""
    entries = _dsn_recipients(content.delivery_reports)
    failed = [entry for entry in entries if entry.action == _ACTION_FAILED]
    delayed = [entry for entry in entries if entry.action == _ACTION_DELAYED]
    delivered = [entry for entry in entries if entry.action in _ACTIONS_DELIVERED]
    segments = _segments(texts.human, [entry.address for entry in failed or delayed])
    if failed:
        return NoticeKind.BOUNCE, [_dsn_failure(entry, segments, NoticeKind.BOUNCE) for entry in failed]
    if delayed:
        return NoticeKind.DELAY, [_dsn_failure(entry, segments, NoticeKind.DELAY) for entry in delayed]
    if delivered:
        return NoticeKind.DELIVERED, [
            FailedRecipient(
                entry.address,
                entry.status,
                None,
                entry.diagnostic,
                Reason.DELIVERED.value,
                False,
                entry.remote_mta,
            )
            for entry in delivered
        ]
    return None


def _dsn_recipients(reports: list[list[Block]]) -> list[_DsnRecipient]:
    entries: dict[str, _DsnRecipient] = {}
    for blocks in reports:
        for block in blocks:
            # RFC 3464 section 2.3.1: Original-Recipient is the address as the sender wrote it,
            # before any forwarding; it ties the bounce to sendrail's recipient best.
            address = _typed_address(_first_field(block, "original-recipient")) or _typed_address(
                _first_field(block, "final-recipient")
            )
            if address is None or address in entries or len(entries) >= MAX_RECIPIENTS:
                continue
            diagnostic = _typed_text(_first_field(block, "diagnostic-code"))
            statuses = find_statuses(_first_field(block, "status") or "")
            status = _specific_status(statuses[0] if statuses else None, diagnostic)
            action = (_first_field(block, "action") or "").strip().lower().split(" ")[0]
            entries[address] = _DsnRecipient(
                address=address,
                action=action if action else _action_from_status(status, diagnostic),
                status=status,
                diagnostic=diagnostic,
                remote_mta=_typed_text(_first_field(block, "remote-mta")),
                category=_POWERMTA_CATEGORIES.get(
                    (_first_field(block, "x-powermta-bouncecategory") or "").strip().lower()
                ),
            )
    return list(entries.values())


def _specific_status(status: str | None, diagnostic: str | None) -> str | None:
    """The Status field, or the diagnostic's own status where the field is missing or only
    says the class (X.0.0, RFC 3463 section 3.1): servers often report "5.0.0" above a
    "550 5.1.1" reply."""
    if status is not None and not status.endswith(".0.0"):
        return status
    for written in find_statuses(diagnostic or ""):
        same_class = status is None or written[0] == status[0]
        if written[0] in "45" and same_class and not written.endswith(".0.0"):
            return written
    return status or _first_status(diagnostic or "")


def _typed_text(value: str | None) -> str | None:
    """The text of an RFC 3464 "type; text" field (Diagnostic-Code, Remote-MTA), compacted."""
    if not value:
        return None
    kind, separator, text = value.partition(";")
    if not separator or " " in kind.strip():
        text = value
    return _compact(text)


def _action_from_status(status: str | None, diagnostic: str | None) -> str:
    """Some servers omit Action; the status class says the same (RFC 3463 section 3.1)."""
    code = status or _reply_code(diagnostic or "") or ""
    return {"5": _ACTION_FAILED, "4": _ACTION_DELAYED, "2": "delivered"}.get(code[:1], "")


def _dsn_failure(entry: _DsnRecipient, segments: dict[str, str], kind: NoticeKind) -> FailedRecipient:
    diagnostic = entry.diagnostic or _read_reply(segments.get(entry.address, "")).diagnostic(entry.address)
    status = entry.status or _first_status(diagnostic or "")
    failed = _failed(entry.address, status, _reply_code(diagnostic or ""), diagnostic, entry.remote_mta, kind)
    if entry.category is None:
        return failed
    return replace(
        failed, reason=entry.category.value, hard=kind is NoticeKind.BOUNCE and is_hard(entry.category)
    )


def _failed(
    address: str,
    status: str | None,
    reply_code: str | None,
    diagnostic: str | None,
    remote_mta: str | None,
    kind: NoticeKind,
) -> FailedRecipient:
    reason = classify(status, reply_code, diagnostic)
    # A delay is never hard: the server is still trying.
    return FailedRecipient(
        address,
        status,
        reply_code,
        diagnostic,
        reason,
        kind is NoticeKind.BOUNCE and is_hard(reason),
        remote_mta,
    )


def _rejections(content: _Content, texts: _Texts) -> list[FailedRecipient]:
    """Sieve "reject" answers with an MDN whose disposition is automatic and "deleted"
    (RFC 5429 section 2.2.1, RFC 8098 section 3.2.6): a refusal by the recipient's system."""
    if not content.disposition_reports:
        return []
    recipients: dict[str, FailedRecipient] = {}
    diagnostic = _compact(texts.human) or None
    for blocks in content.disposition_reports:
        for block in blocks:
            if len(recipients) >= MAX_RECIPIENTS:
                return list(recipients.values())
            disposition = (_first_field(block, "disposition") or "").lower()
            address = _typed_address(_first_field(block, "original-recipient")) or _typed_address(
                _first_field(block, "final-recipient")
            )
            deleted = "automatic-action" in disposition and "deleted" in disposition
            if address and deleted and address not in recipients:
                recipients[address] = _failed(address, None, None, diagnostic, None, NoticeKind.BOUNCE)
    return list(recipients.values())


# --- feedback reports --------------------------------------------------------------------------


def _complainants(content: _Content) -> list[FailedRecipient]:
    """Who complained: RFC 5965 Original-Rcpt-To, else the returned original's To."""
    addresses: dict[str, None] = {}
    feedback_type: str | None = None
    for blocks in content.feedback_reports:
        for block in blocks:
            feedback_type = feedback_type or _first_field(block, "feedback-type")
            for name, value in block:
                if name == "original-rcpt-to":
                    for address in _addresses_in(value):
                        addresses.setdefault(address, None)
    if not addresses and content.original_headers is not None:
        for address in _header_addresses(content.original_headers, "to"):
            addresses.setdefault(address, None)
    diagnostic = _compact(feedback_type) if feedback_type else None
    return [
        FailedRecipient(address, None, None, diagnostic, Reason.FEEDBACK.value, False)
        for address in list(addresses)[:MAX_RECIPIENTS]
    ]


# --- plain-text bounces ------------------------------------------------------------------------


def _sent_by_mail_system(message: Message, texts: _Texts) -> bool:
    """Headers only mail systems set on their notices, or a system sender that words a failure
    (postmasters also send quarantine digests and notices that report nothing)."""
    if any(name in message for name in _BOUNCE_HEADERS):
        return True
    sender = _header(message, "from")
    if MAILER_DAEMON_RE.search(sender):
        return True
    if not SYSTEM_SENDER_RE.search(sender):
        return False
    subject = _header(message, "subject")
    return bool(
        BOUNCE_SUBJECT_RE.search(subject)
        or SUCCESS_SUBJECT_RE.search(subject)
        or BOUNCE_PHRASE_RE.search(texts.human)
        or DELAY_PHRASE_RE.search(texts.human)
        or _FAILURE_REPLY_RE.search(texts.human)
    )


def _reads_as_notice(message: Message, texts: _Texts) -> bool:
    return _sent_by_mail_system(message, texts) or _looks_like_bounce(message, texts)


def _looks_like_bounce(message: Message, texts: _Texts) -> bool:
    """Worded as a delivery failure and sent as a notice, not a person's mail that mentions one."""
    if not BOUNCE_PHRASE_RE.search(texts.human):
        return False
    subject = _header(message, "subject")
    if REPLY_SUBJECT_RE.match(subject):
        return False
    # RFC 5321 section 4.5.5: notices about delivery are sent with a null reverse-path.
    null_sender = "return-path" in message and _header(message, "return-path").strip() in ("<>", "")
    return null_sender or bool(BOUNCE_SUBJECT_RE.search(subject))


def _plain_kind(message: Message, texts: _Texts) -> NoticeKind:
    """A notice without a report: a success, a warning that delivery goes on, or a failure."""
    subject = _header(message, "subject")
    failure_code = _FAILURE_REPLY_RE.search(texts.human)
    if SUCCESS_SUBJECT_RE.search(subject) and not FAILURE_SUBJECT_RE.search(subject):
        return NoticeKind.DELIVERED
    if SUCCESS_PHRASE_RE.search(texts.human) and not failure_code and not BOUNCE_SUBJECT_RE.search(subject):
        return NoticeKind.DELIVERED
    if BOUNCE_SUBJECT_RE.search(subject) and DELAY_SUBJECT_RE.search(subject):
        if not PERMANENT_PHRASE_RE.search(texts.human):
            return NoticeKind.DELAY
    elif DELAY_PHRASE_RE.search(texts.human) and not PERMANENT_PHRASE_RE.search(texts.human):
        return NoticeKind.DELAY
    return NoticeKind.BOUNCE


def _text_recipients(
    message: Message, content: _Content, texts: _Texts, kind: NoticeKind
) -> list[FailedRecipient]:
    """Failed recipients of a bounce without a usable report: X-Failed-Recipients, else its text."""
    named = _header_addresses(message, "x-failed-recipients")
    addresses = list(dict.fromkeys(named)) or _text_candidates(
        texts.human, _notice_people(message), _original_people(content)
    )
    if not addresses:
        addresses = _bare_recipients(texts.human, message)
    addresses = addresses[:MAX_RECIPIENTS]
    segments = _segments(texts.human, addresses)
    whole_text: _Reply | None = None  # read once, and only if needed
    recipients = []
    for address in addresses:
        reply = _read_reply(segments.get(address, ""))
        diagnostic = reply.diagnostic(address)
        if not reply.has_code and not _reason_words(diagnostic):
            # Nothing said next to the address: the text's SMTP reply is about it (the only
            # recipient, or recipients that share one reply, as an alias and its expansion do);
            # without any reply, the only recipient's reason is worded somewhere in the text.
            whole_text = whole_text or _read_reply(texts.human)
            if whole_text.has_code:
                reply = whole_text
                diagnostic = reply.diagnostic(address)
            elif len(addresses) == 1:
                diagnostic = _compact(texts.human) or diagnostic
        if kind is NoticeKind.DELIVERED:
            recipients.append(
                FailedRecipient(address, reply.status, None, diagnostic, Reason.DELIVERED.value, False)
            )
            continue
        recipients.append(_failed(address, reply.status, reply.reply_code, diagnostic, None, kind))
    return recipients


def _reason_words(diagnostic: str | None) -> bool:
    """Whether a diagnostic says why on its own (a reason other than undefined)."""
    return classify(None, None, diagnostic) != Reason.UNDEFINED.value


def _bare_recipients(text: str, message: Message) -> list[str]:
    """Local parts listed alone under "the following recipients:", in the notice sender's
    domain: AOL and some hosted systems name their own users by screen name."""
    senders = [a for a in _header_addresses(message, "from") if "@" in a]
    if not senders:
        return []
    domain = senders[0].rpartition("@")[2]
    found: dict[str, None] = {}
    listing = False
    for line in text.splitlines()[:MAX_TEXT_LINES]:
        if _FOLLOWING_HEADING_RE.search(line):
            listing = True
            continue
        if not listing:
            continue
        bare = _BARE_LOCAL_PART_RE.match(line)
        if bare and "@" not in line:
            address = _normal_address(f"{bare.group(1)}@{domain}")
            if address and _is_foreign(address, set()):
                found.setdefault(address, None)
        elif line.strip():
            listing = False
    return list(found)


def _notice_people(message: Message) -> set[str]:
    """The notice's own sender and addressees (the sendrail user): never a failed recipient."""
    names = ("from", "sender", "reply-to", "to", "cc", "return-path")
    return {address for name in names for address in _header_addresses(message, name)}


def _original_people(content: _Content) -> set[str]:
    """Who sent the original: bounce prose names them ("your message from ... to ...")."""
    if content.original_headers is None:
        return set()
    names = ("from", "sender", "reply-to", "return-path")
    return {a for name in names for a in _header_addresses(content.original_headers, name)}


def _text_candidates(text: str, notice_people: set[str], original_people: set[str]) -> list[str]:
    """Addresses a bounce's text names as recipients, by how surely the position says so:
    opening a line, labelled as the recipient, after RCPT TO or inside an X.400 name; else on
    a line that reports a failure; else the only address the text mentions. Where Postfix or
    Sendmail say "(expanded from <x>)", x is the address the sender wrote and comes first;
    where a label says "Original address", that one alone is."""
    positioned: dict[str, None] = {}
    originals: dict[str, None] = {}
    on_failure_lines: dict[str, None] = {}
    mentioned: dict[str, None] = {}
    lines = text.splitlines()[:MAX_TEXT_LINES]
    for index, line in enumerate(lines):
        if "@" not in line or _HEADER_LINE_RE.match(line):
            continue
        on_line = [
            address
            for match in _ADDRESS_RE.finditer(line)
            # "not accepting mail from x@y": the sender, not a recipient
            if not _FROM_BEFORE_RE.search(line, max(match.start() - _FROM_BEFORE_CHARS, 0), match.start())
            and (address := _normal_address(match.group())) is not None
            and _is_foreign(address, notice_people)
        ]
        mentioned.update(dict.fromkeys(on_line))
        opening = _LINE_ADDRESS_RE.match(line) or _EXPANDED_FROM_RE.match(line.strip())
        labelled = None if opening else _LABELLED_ADDRESS_RE.match(line)
        if opening:
            # Both fail: the address the sender wrote and the one its alias led to.
            expanded = _EXPANDED_FROM_RE.search(" ".join(lines[index : index + 3]))
            chosen = [_normal_address(found.group(1)) for found in (expanded, opening) if found]
        elif labelled:
            chosen = [_normal_address(labelled.group(2))]
            if labelled.group(1).lower().startswith("original"):
                originals.update(dict.fromkeys(a for a in chosen if a and _is_foreign(a, notice_people)))
        else:
            chosen = [
                _normal_address(match.group(1))
                for pattern in (_RCPT_TO_RE, _X400_ADDRESS_RE, _MAILTO_LINE_RE)
                for match in pattern.finditer(line)
            ]
        positioned.update(dict.fromkeys(a for a in chosen if a and _is_foreign(a, notice_people)))
        if _FAILURE_LINE_RE.search(line) or _REPLY_CODE_RES[2].match(line):
            on_failure_lines.update(dict.fromkeys(on_line))
    if originals:
        return list(originals)
    for candidates in (positioned, on_failure_lines, mentioned):
        chosen_ones = [a for a in candidates if candidates is positioned or a not in original_people]
        if chosen_ones and (candidates is not mentioned or len(chosen_ones) == 1):
            return chosen_ones
    return []


def _is_foreign(address: str, excluded: set[str]) -> bool:
    return address not in excluded and address.partition("@")[0] not in _SYSTEM_LOCAL_PARTS


def _segments(text: str, addresses: list[str]) -> dict[str, str]:
    """Each address's part of the text: from the line of one of its mentions to the next
    mention of another address. Of an address's parts, the first that holds an SMTP code is
    its own (Exchange lists the recipients first and their codes further down)."""
    if not addresses:
        return {}
    pattern = re.compile(
        r"(?<![\w.+-])(?:" + "|".join(re.escape(a) for a in sorted(addresses, key=len, reverse=True)) + ")"
    )
    lowered = text.lower()
    mentions: list[tuple[int, str]] = []
    for match in pattern.finditer(lowered):
        if mentions and mentions[-1][1] == match.group():
            continue  # the same address again: its part goes on
        mentions.append((match.start(), match.group()))
        if len(mentions) >= MAX_RECIPIENTS * 4:
            break
    segments: dict[str, str] = {}
    coded: dict[str, bool] = {}  # whether an address's segment holds a code
    previous_end = 0
    for index, (position, address) in enumerate(mentions):
        # A segment starts where its line does, or where the one before ended: the line's start
        # is looked for only back to there, so that the text is read once.
        start = max(text.rfind("\n", previous_end, position) + 1, previous_end)
        end = mentions[index + 1][0] if index + 1 < len(mentions) else len(text)
        end = min(end, start + MAX_SEGMENT_CHARS)
        segment = text[start:end]
        if address not in segments:
            segments[address], coded[address] = segment, _has_code(segment)
        elif not coded[address] and _has_code(segment):
            segments[address], coded[address] = segment, True
        previous_end = max(end, position + len(address))
    return segments


def _has_code(text: str) -> bool:
    """Whether a text holds a status or reply code."""
    return _STATUS_RE.search(text) is not None or any(p.search(text) for p in _REPLY_CODE_RES)


def _first_status(text: str) -> str | None:
    match = _STATUS_RE.search(text)
    return match.group() if match else None


def _reply_code(text: str) -> str | None:
    matches = [match for match in (pattern.search(text) for pattern in _REPLY_CODE_RES) if match]
    return min(matches, key=lambda match: match.start()).group(1) if matches else None


def _read_reply(text: str) -> _Reply:
    """The first codes in a recipient's segment (or the whole text), and where the server's words
    are: the paragraph from the line that holds the first code, else the first two paragraphs."""
    status = _STATUS_RE.search(text)
    replies = [match for match in (pattern.search(text) for pattern in _REPLY_CODE_RES) if match]
    reply = min(replies, key=lambda match: match.start()) if replies else None
    code = min((m for m in (status, reply) if m is not None), key=lambda match: match.start(), default=None)
    paragraphs = (
        [_paragraph_at(text, text.rfind("\n", 0, code.start()) + 1)]
        if code is not None
        else _PARAGRAPH_BREAK_RE.split(text, maxsplit=2)[:2]
    )
    return _Reply(
        has_code=code is not None,
        status=status.group() if status else None,
        reply_code=reply.group(1) if reply else None,
        paragraphs=tuple(_compact(paragraph) for paragraph in paragraphs),
    )


def _paragraph_at(text: str, start: int) -> str:
    paragraph_end = _PARAGRAPH_BREAK_RE.search(text, start)
    return text[start : paragraph_end.start() if paragraph_end else len(text)]


def _compact(text: str) -> str:
    """Whitespace collapsed, control characters dropped, multiline SMTP replies joined, bounded."""
    words = _CONTROL_CHARS_RE.sub(" ", text[: MAX_DIAGNOSTIC_CHARS * 8]).split()
    joined = " ".join(words)
    # RFC 5321 section 4.2.1: "550-5.1.1 first line ... 550 5.1.1 last line" is one reply.
    first = _REPLY_OPENING_RE.match(joined)
    if first:
        continuation = re.compile(rf" {first.group(1)}[ -]{re.escape(first.group(2))}")
        joined = f"{first.group(1)} {first.group(2)}" + continuation.sub(" ", joined[first.end() :])
    return joined[:MAX_DIAGNOSTIC_CHARS].strip()


# --- auto-replies ------------------------------------------------------------------------------


def _is_auto_reply(message: Message) -> bool:
    """RFC 3834 section 5.1 Auto-Submitted: auto-replied, the headers responders set instead,
    or the subjects out-of-office responders write."""
    if _header(message, "auto-submitted").strip().lower().startswith("auto-replied"):
        return True
    if any(name in message for name in _AUTO_REPLY_HEADERS):
        return True
    if _header(message, "precedence").strip().lower() == "auto_reply":
        return True
    return bool(AUTO_REPLY_SUBJECT_RE.search(_header(message, "subject")))
