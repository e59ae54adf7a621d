"""What providers' SMTP replies mean (PRODUCT.md section 3), and the outcomes they become."""

from __future__ import annotations

import pytest

from sendrail.delivery.outcome import OutcomeKind
from sendrail.mail.replies import GENERIC_RULES, ReplyRule, classify_reply, outcome_for_reply
from sendrail.services.sender_exchange.replies import EXCHANGE_ONLINE_RULES
from sendrail.services.sender_gmail.replies import GMAIL_RULES

RETRY, PAUSE, BROKEN, REJECT = (OutcomeKind.RETRY, OutcomeKind.PAUSE, OutcomeKind.BROKEN,
                                OutcomeKind.FAILED)

# Gmail's replies as its servers write them: the enhanced code opens each line, and the
# last line ends with a session id and "- gsmtp" (aiosmtplib joins lines with "\n").
GMAIL_REPLIES = [
    (421, "4.7.0 Try again later, closing connection. (EHLO) d9443c01a7336-1f6-gsmtp", RETRY),
    (421, "4.4.5 Server busy, try again later. a640c23a62f3a-a7d-gsmtp", RETRY),
    (450, "4.2.1 The user you are trying to contact is receiving mail too quickly. Please resend "
          "your message at a later time.\n4.2.1 https://support.google.com/mail/answer/22839 "
          "ffacd0b85a97d-37-gsmtp", RETRY),
    (452, "4.5.3 Your message has too many recipients. For more information regarding Google's "
          "sending limits, visit\n4.5.3  https://support.google.com/mail/answer/6592 5b1f17b1804b1-42-"
          "gsmtp", REJECT),
    (550, "5.4.5 Daily user sending quota exceeded. d75a77b69052e-45-gsmtp", PAUSE),
    (550, "5.4.5 Daily user sending limit exceeded. For more information on Gmail\n5.4.5 sending "
          "limits go to\n5.4.5  https://support.google.com/a/answer/166852 - gsmtp", PAUSE),
    (535, "5.7.8 Username and Password not accepted. For more information, go to\n5.7.8  "
          "https://support.google.com/mail/?p=BadCredentials 5b1f17b1804b1-42-gsmtp", BROKEN),
    (534, "5.7.9 Application-specific password required. Learn more at\n5.7.9  "
          "https://support.google.com/mail/?p=InvalidSecondFactor d2e1a72fcca58-71-gsmtp", BROKEN),
    # "454: back off first": retried with backoff rather than failed at once.
    (454, "4.7.0 Too many login attempts, please try again later. 98e67ed59e1d1-2e-gsmtp", RETRY),
]

EXCHANGE_REPLIES = [
    (554, "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process "
          "message due to a permanent exception with message Cannot submit message. "
          "[Hostname=BY5PR11MB4007.namprd11.prod.outlook.com]", PAUSE),
    (432, "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded "
          "[Hostname=DM6PR11MB3019.namprd11.prod.outlook.com]", RETRY),
    (432, "4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending "
          "for more information. [Hostname=AM0PR02MB5555.eurprd02.prod.outlook.com]", RETRY),
    (554, "5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException."
          "MapiExceptionQuotaExceeded; Failed to process message due to a permanent exception",
     PAUSE),
    *[(550, f"5.2.{n} Sender throttled due to continuous invalid recipients errors", PAUSE)
      for n in range(251, 256)],
    (535, "5.7.3 Authentication unsuccessful [SN4PR0201CA0053.namprd02.prod.outlook.com]", BROKEN),
    (535, "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
          "Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. "
          "[MW4PR03CA0037.namprd03.prod.outlook.com]", BROKEN),
    (535, "5.7.139 Authentication unsuccessful, the user credentials were incorrect.", BROKEN),
    (550, "5.7.30 Basic authentication is not supported for Client Submission.", BROKEN),
    (550, "5.7.705 Access denied, tenant has exceeded threshold", BROKEN),
    (550, "5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.", BROKEN),
    (550, "5.1.8 Access denied, bad outbound sender", BROKEN),
    (550, "5.7.60 SMTP; Client does not have permissions to send as this sender", REJECT),
    # A temporary reply stays temporary, whatever digits its server names or addresses hold.
    (451, "4.7.500 Server busy. Please try again later from [10.45.1.80]. (AS761) "
          "[BN8NAM12FT005.eop-nam12.prod.protection.outlook.com]", RETRY),
    (421, "4.3.2 Service not available, closing transmission channel [10.15.1.8]", RETRY),
    (550, "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
     REJECT),
]


@pytest.mark.parametrize(("code", "text", "action"), GMAIL_REPLIES,
                         ids=[f"{c} {t[:40]}" for c, t, _ in GMAIL_REPLIES])
def test_gmail_replies(code: int, text: str, action: OutcomeKind) -> None:
    assert classify_reply(code, text, GMAIL_RULES).action is action


@pytest.mark.parametrize(("code", "text", "action"), EXCHANGE_REPLIES,
                         ids=[f"{c} {t[:40]}" for c, t, _ in EXCHANGE_REPLIES])
def test_exchange_online_replies(code: int, text: str, action: OutcomeKind) -> None:
    assert classify_reply(code, text, EXCHANGE_ONLINE_RULES).action is action


@pytest.mark.parametrize("table", [GMAIL_RULES, EXCHANGE_ONLINE_RULES], ids=["gmail", "exchange"])
def test_every_provider_rule_answers_one_of_its_replies(table: tuple[ReplyRule, ...]) -> None:
    """No dead rule: each rule of a provider's table is the one that decides a listed reply."""
    replies = GMAIL_REPLIES if table is GMAIL_RULES else EXCHANGE_REPLIES
    deciding = {id(classify_reply(code, text, table)) for code, text, _ in replies}
    assert all(id(rule) in deciding for rule in table)


def test_a_provider_rule_comes_before_the_generic_one() -> None:
    matched = classify_reply(535, "5.7.8 Username and Password not accepted. - gsmtp", GMAIL_RULES)
    assert matched in GMAIL_RULES
    assert "Gmail" in matched.meaning


GENERIC_REPLIES = [
    (421, "4.3.0 Temporary system problem", RETRY),
    (450, "4.2.0 Mailbox unavailable", RETRY),
    (451, "4.3.0 Local error in processing", RETRY),
    (452, "4.3.1 Insufficient system storage", RETRY),
    (452, "4.5.3 Too many recipients", REJECT),
    (452, "Too many recipients received this hour", REJECT),
    (454, "4.7.0 Temporary authentication failure", RETRY),
    (454, "4.7.0 TLS not available due to local problem", RETRY),
    (530, "5.7.0 Authentication required", BROKEN),
    (534, "5.7.9 Please log in with your web browser", BROKEN),
    (535, "5.7.8 Error: authentication failed: UGFzc3dvcmQ6", BROKEN),
    (535, "Incorrect authentication data", BROKEN),
    (550, "5.1.1 <nobody@customer.example>: Recipient address rejected: User unknown", REJECT),
    (550, "5.7.1 Message rejected as spam", REJECT),
    (552, "5.3.4 Message size exceeds fixed limit", REJECT),
    (553, "5.1.3 Invalid address", REJECT),
    (554, "5.7.1 Relay access denied", REJECT),
    (500, "5.5.2 Syntax error", REJECT),
]


@pytest.mark.parametrize(("code", "text", "action"), GENERIC_REPLIES,
                         ids=[f"{c} {t[:40]}" for c, t, _ in GENERIC_REPLIES])
def test_generic_replies(code: int, text: str, action: OutcomeKind) -> None:
    assert classify_reply(code, text).action is action


@pytest.mark.parametrize("table", [(), GMAIL_RULES, EXCHANGE_ONLINE_RULES],
                         ids=["generic", "gmail", "exchange"])
@pytest.mark.parametrize(("code", "action"), [(421, RETRY), (499, RETRY), (450, RETRY),
                                              (500, REJECT), (550, REJECT), (599, REJECT)])
def test_unknown_replies_fall_back_to_their_code_class(table: tuple[ReplyRule, ...], code: int,
                                                       action: OutcomeKind) -> None:
    matched = classify_reply(code, "something nobody has seen before", table)
    assert matched.action is action
    assert matched.meaning


def test_matching_ignores_case() -> None:
    assert classify_reply(535, "5.7.139 authentication unsuccessful, smtpclientauthentication IS "
                               "DISABLED", EXCHANGE_ONLINE_RULES).action is BROKEN
    assert classify_reply(452, "TOO MANY RECIPIENTS").action is REJECT


def test_generic_rules_are_all_specific_to_a_code() -> None:
    """A generic rule without a code would override the code class for every reply."""
    assert all(rule.code is not None for rule in GENERIC_RULES)


@pytest.mark.parametrize(
    ("code", "text", "table", "kind"),
    [
        (421, "4.7.0 Try again later, closing connection. - gsmtp", GMAIL_RULES, RETRY),
        (550, "5.4.5 Daily user sending quota exceeded. - gsmtp", GMAIL_RULES, PAUSE),
        (535, "5.7.8 Username and Password not accepted. - gsmtp", GMAIL_RULES, BROKEN),
        (550, "5.1.1 The email account that you tried to reach does not exist. - gsmtp",
         GMAIL_RULES, REJECT),
        (554, "5.2.2 mailbox full; QuotaExceededException", EXCHANGE_ONLINE_RULES, PAUSE),
        (550, "5.7.30 Basic authentication is not supported for Client Submission.",
         EXCHANGE_ONLINE_RULES, BROKEN),
        (451, "4.3.0 Temporary failure", (), RETRY),
        (554, "5.6.0 Corrupt message content", (), REJECT),
    ],
)
def test_outcome_for_reply(code: int, text: str, table: tuple[ReplyRule, ...],
                           kind: OutcomeKind) -> None:
    outcome = outcome_for_reply(code, text, table)
    assert outcome.kind is kind
    assert outcome.reply_code == code
    assert outcome.reply_text == text
    assert outcome.reason == classify_reply(code, text, table).meaning
