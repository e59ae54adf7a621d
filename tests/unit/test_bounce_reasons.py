"""Bounce reasons: status codes, reply codes and diagnostic wording mapped onto the taxonomy."""

import pytest

from sendrail.bounces.reasons import (
    HARD_REASONS,
    PRECISE_STATUS,
    REPLY_CODE_FALLBACKS,
    STATUS_FALLBACKS,
    SUBJECT_FALLBACKS,
    TEXT_RULES,
    Reason,
    classify,
    find_statuses,
    is_hard,
)

TAXONOMY = {
    "userunknown", "hostunknown", "hasmoved", "notaccept", "mailboxfull", "filtered", "blocked",
    "rejected", "spamdetected", "policyviolation", "securityerror", "virusdetected",
    "contenterror", "mesgtoobig", "exceedlimit", "expired", "suspend", "norelaying",
    "networkerror", "systemerror", "systemfull", "toomanyconn", "speeding", "authfailure",
    "badreputation", "requireptr", "failedstarttls", "notcompliantrfc", "syntaxerror",
    "mailererror", "suppressed", "onhold", "undefined", "vacation", "feedback", "delivered",
}  # fmt: skip


CASES = [
    # (status, reply code, diagnostic, reason)
    # precise status codes (RFC 3463) decide, whatever the wording
    ("5.1.1", "550", "5.1.1 <x@example.com>: Recipient address rejected: User unknown", "userunknown"),
    ("5.1.1", "550", "The email account that you tried to reach does not exist.", "userunknown"),
    ("5.1.2", "550", "Host or domain name not found", "hostunknown"),
    ("5.1.6", "550", "mailbox has moved", "hasmoved"),
    ("5.2.2", "552", "The email account that you tried to reach is over quota.", "mailboxfull"),
    ("5.2.1", "550", "The email account that you tried to reach is disabled.", "suspend"),
    ("5.3.4", "552", "Message size exceeds fixed maximum message size", "mesgtoobig"),
    ("5.2.3", "552", "RESOLVER.RST.RecipSizeLimit; message too large", "mesgtoobig"),
    ("4.4.7", None, "retry timeout exceeded", "expired"),
    ("5.4.7", None, None, "expired"),
    ("5.7.26", "550", "This mail has been blocked because the sender is unauthenticated.", "authfailure"),
    ("5.7.25", "550", "The IP address sending this message does not have a PTR record", "requireptr"),
    ("5.7.708", "550", "Access denied, traffic not accepted from this IP.", "blocked"),
    ("5.6.11", "550", "SMTPSEND.BareLinefeedsAreIllegal", "notcompliantrfc"),
    ("5.5.3", "452", "Too many recipients", "exceedlimit"),
    ("5.1.1", "550", "spam filter says no such user", "userunknown"),  # status beats words
    # Microsoft's 5.1.10 is RecipientNotFound; RFC 7505 gave X.1.10 to null MX: the text decides
    ("5.1.10", "550", "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", "userunknown"),
    ("5.1.10", "550", "Recipient address has null MX", "notaccept"),
    ("5.1.10", "550", None, "userunknown"),
    # Microsoft directory-based edge blocking on 5.4.1; RFC 3463 meaning otherwise
    ("5.4.1", "550", "Recipient address rejected: Access denied. AS(201806281)", "userunknown"),
    ("4.4.1", None, "Connection timed out", "networkerror"),
    ("4.4.1", None, None, "networkerror"),
    # 5.7.1: the wording decides, "rejected" when it says nothing known
    ("5.7.1", "554", "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org", "blocked"),
    ("5.7.1", "550", "Our system has detected that this message is likely unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been blocked.", "spamdetected"),
    ("5.7.1", "550", "Relaying denied", "norelaying"),
    ("5.7.1", "554", "<x@example.com>: Relay access denied", "norelaying"),
    ("5.7.1", "550", "Message rejected due to content restrictions (policy)", "policyviolation"),
    ("5.7.1", "550", "Delivery not authorized, message refused", "filtered"),
    ("5.7.1", "550", "Unauthenticated email from example.com is not accepted due to domain's DMARC policy", "authfailure"),
    ("5.7.1", "554", "Message rejected: virus found in attachment", "virusdetected"),
    ("5.7.1", "550", None, "rejected"),
    ("5.7.1", "550", "Your message was rejected: sender address rejected: not owned by user", "rejected"),
    ("5.7.0", "550", None, "securityerror"),
    # generic codes read the wording
    ("5.0.0", "550", "Recipient reached disk quota", "mailboxfull"),
    ("5.0.0", None, "mailbox full", "mailboxfull"),
    ("5.0.0", "550", "host mx.example.com said: 550 unknown user <x@example.com>", "userunknown"),
    ("5.0.0", "550", "No such user here", "userunknown"),
    ("5.0.0", "550", "User's mailbox is full", "mailboxfull"),
    ("5.0.0", "554", "Message looping", "networkerror"),
    # RFC 5321's own 550 text; servers send it for addresses they do not know (bounce analysers agree)
    ("5.5.0", "550", "Requested action not taken: mailbox unavailable", "userunknown"),
    # a status written in the diagnostic counts when the field is generic
    ("5.0.0", "550", "550 5.1.1 <x@example.com>... User unknown", "userunknown"),
    (None, "550", "550 5.2.2 Mailbox full", "mailboxfull"),
    # wording alone
    (None, None, "Sender address rejected: User unknown in local recipient table", "rejected"),
    (None, "550", "Name service error for domain example.com: Host not found", "hostunknown"),
    (None, "550", "This user doesn't have a example.net account", "userunknown"),
    (None, None, "Sorry, no mailbox here by that name.", "userunknown"),
    (None, None, "Domain example.com does not accept mail (nullMX)", "notaccept"),
    (None, None, "too many connections from your host", "toomanyconn"),
    (None, "421", "Rate limited: you are sending too fast", "speeding"),
    (None, "450", "The user you are trying to contact is receiving mail too quickly", "speeding"),
    (None, "554", "Message rejected: Email address is on the suppression list", "suppressed"),
    (None, None, "Must issue a STARTTLS command first", "failedstarttls"),
    (None, None, "Daily user sending quota exceeded", "exceedlimit"),
    (None, None, "Your IP has a poor reputation", "badreputation"),
    (None, None, "account has been disabled or discontinued", "suspend"),
    (None, None, "Message expired in queue", "expired"),
    (None, None, "Command died with status 17", "mailererror"),
    (None, None, "Internal server error, try again later", "systemerror"),
    (None, None, "Insufficient system storage", "systemfull"),
    (None, None, "Syntax error in parameters", "syntaxerror"),
    (None, None, "Message not RFC 5322 compliant: missing Date header", "notcompliantrfc"),
    # addresses are masked: a local part is not a word
    (None, None, "Delivery to spam@example.com failed: no such user", "userunknown"),
    # reply codes alone (RFC 5321 section 4.2)
    (None, "552", None, "mailboxfull"),
    (None, "551", "User not local; please try <x@example.org>", "hasmoved"),
    (None, "554", None, "rejected"),
    (None, "550", None, "undefined"),
    (None, None, None, "undefined"),
    # status subjects
    ("5.6.0", None, None, "contenterror"),
    ("4.3.0", None, None, "systemerror"),
    # success
    ("2.0.0", "250", "250 2.0.0 OK", "delivered"),
    (None, "250", None, "delivered"),
    # a success code quoted in a failure's text is not the outcome
    ("5.0.0", None, "Undeliverable: Mailman 2.0.12 released", "undefined"),
]  # fmt: skip


@pytest.mark.parametrize(("status", "reply_code", "diagnostic", "reason"), CASES)
def test_classify(status: str | None, reply_code: str | None, diagnostic: str | None, reason: str) -> None:
    assert classify(status, reply_code, diagnostic) == reason


@pytest.mark.parametrize(
    ("reason", "hard"),
    [
        ("userunknown", True),
        ("hostunknown", True),
        ("hasmoved", True),
        ("notaccept", True),
        ("mailboxfull", False),
        ("blocked", False),
        ("filtered", False),
        ("spamdetected", False),
        ("rejected", False),
        ("suspend", False),
        ("expired", False),
        ("undefined", False),
        ("vacation", False),
        ("", False),
        ("no-such-reason", False),
    ],
)
def test_is_hard(reason: str, hard: bool) -> None:
    assert is_hard(reason) is hard


def test_only_four_reasons_are_hard() -> None:
    assert {str(reason) for reason in HARD_REASONS} == {
        "userunknown",
        "hostunknown",
        "hasmoved",
        "notaccept",
    }


def test_a_5xx_code_is_hard_only_for_an_address_reason() -> None:
    """PRODUCT.md section 4: a filtered or blocked 5.x.x bounce is soft."""
    blocked = classify("5.7.1", "554", "blocked using bl.spamcop.net")
    unknown = classify("5.1.1", "550", "User unknown")
    assert (blocked, is_hard(blocked)) == ("blocked", False)
    assert (unknown, is_hard(unknown)) == ("userunknown", True)


def test_taxonomy_is_the_product_list() -> None:
    assert {reason.value for reason in Reason} == TAXONOMY


def test_every_table_maps_onto_the_taxonomy() -> None:
    tables = [PRECISE_STATUS, STATUS_FALLBACKS, SUBJECT_FALLBACKS, REPLY_CODE_FALLBACKS]
    reasons = {reason for table in tables for reason in table.values()}
    reasons |= {reason for reason, _ in TEXT_RULES}
    assert reasons <= set(Reason)
    assert all(key[0] in "45X" for key in [*PRECISE_STATUS, *STATUS_FALLBACKS])


@pytest.mark.parametrize(
    ("text", "statuses"),
    [
        ("550 5.1.1 User unknown", ["5.1.1"]),
        ("550 5.7.708 Access denied", ["5.7.708"]),
        ("Sorry, no mailbox here by that name. (#5.1.1)", ["5.1.1"]),
        ("host mx.example.com[192.0.2.15] said: 550 5.1.10 x", ["5.1.10"]),
        ("from 130.161.33.163 and 10.4.5.6", []),
        ("version 15.20.4.5", []),
        ("4.4.7 then 5.4.7.", ["4.4.7", "5.4.7"]),
    ],
)
def test_find_statuses_skips_ip_addresses_and_versions(text: str, statuses: list[str]) -> None:
    assert find_statuses(text) == statuses


@pytest.mark.parametrize(
    "diagnostic",
    ["", "\x00\x01", "5." * 5000, "a" * 100_000, "550 " * 10_000, "é" * 1000],
)
def test_classify_accepts_any_text(diagnostic: str) -> None:
    assert classify(diagnostic, diagnostic, diagnostic) in TAXONOMY


LOCALISED_CASES = [
    # German
    ("5.0.0", "Benutzer unbekannt", "userunknown"),
    ("5.0.0", "Das Postfach des Empfängers ist voll", "mailboxfull"),
    (None, "Die Domain existiert nicht", "hostunknown"),
    # French
    ("5.0.0", "Utilisateur inconnu", "userunknown"),
    (None, "La boîte aux lettres du destinataire est pleine", "mailboxfull"),
    # Spanish
    ("5.0.0", "Usuario desconocido", "userunknown"),
    (None, "El buzón del destinatario está lleno", "mailboxfull"),
    # Italian
    ("5.0.0", "Utente sconosciuto", "userunknown"),
    (None, "La casella di posta è piena", "mailboxfull"),
    # Portuguese
    ("5.0.0", "Usuário desconhecido", "userunknown"),
    (None, "A caixa de correio está cheia", "mailboxfull"),
    # Dutch
    ("5.0.0", "Onbekende gebruiker", "userunknown"),
    (None, "Mailbox is vol", "mailboxfull"),
    # Russian
    ("5.0.0", "Пользователь не найден", "userunknown"),
    (None, "Почтовый ящик получателя переполнен", "mailboxfull"),
    # Japanese
    ("5.0.0", "宛先不明のため配信できませんでした", "userunknown"),
    (None, "メールボックスがいっぱいです", "mailboxfull"),
]


@pytest.mark.parametrize(("status", "diagnostic", "reason"), LOCALISED_CASES)
def test_localised_wording_names_the_reason_behind_a_generic_status(
    status: str | None, diagnostic: str, reason: str
) -> None:
    assert classify(status, "550", diagnostic) == reason


@pytest.mark.parametrize(
    ("diagnostic", "reason"),
    [
        ("User tora (tora@example.jp) not listed in Domino Directory", "userunknown"),
        ("#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##", "userunknown"),
        ("550 5.7.1 Message content rejected, UBE, id=00000-22-225", "spamdetected"),
        ("Sorry, I couldn't find any host named example.invalid. (#5.1.2)", "hostunknown"),
        ("they are not accepting mail from alice@sender.example", "filtered"),
        ("550 5.7.1 Delivery not authorized, message refused: administrative prohibition", "rejected"),
        ("552 5.0.0 Mailbox size limit exceeded", "mailboxfull"),
    ],
)
def test_provider_wording_names_the_reason(diagnostic: str, reason: str) -> None:
    assert classify(None, None, diagnostic) == reason
