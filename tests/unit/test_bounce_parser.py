"""Bounce parser: real-world notice formats in, Notices out; hostile input never raises."""

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sendrail.bounces import FailedRecipient, Notice, NoticeKind, parse_notice
from sendrail.bounces.parser import MAX_MESSAGE_BYTES
from sendrail.bounces.reasons import HARD_REASONS
from sendrail.mail.headers import SEND_ID_HEADER

SEND_ID = "0b9c6a52-4f0e-4d1e-9a57-3c2f8e1d7b40"
ORIGINAL_ID = "<CAF1r8mXq2@mail.sendrail.example>"


def crlf(text: str) -> bytes:
    """A message as IMAP hands it over: CRLF line ends."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def original_headers(to: str = "nobody@example.com") -> str:
    return f"""\
Return-Path: <alice@sender.example>
Received: by mail.sender.example with SMTP id a1; Mon, 05 Jun 2023 01:02:03 -0700 (PDT)
MIME-Version: 1.0
From: Alice Sender <alice@sender.example>
Date: Mon, 5 Jun 2023 10:02:01 +0200
Message-ID: {ORIGINAL_ID}
Subject: Quick question about your roadmap
To: {to}
{SEND_ID_HEADER}: {SEND_ID}
Content-Type: text/plain; charset="UTF-8"
"""


GMAIL_BOUNCE = f"""\
Delivered-To: alice@sender.example
Return-Path: <>
Received: by 2002:a05:6a10:1c2:b0:4b3 with SMTP id a2; Mon, 05 Jun 2023 01:02:05 -0700 (PDT)
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: alice@sender.example
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Failure)
References: {ORIGINAL_ID}
In-Reply-To: {ORIGINAL_ID}
X-Failed-Recipients: nobody@example.com
Message-ID: <647da7bd.a1@mx.google.com>
Date: Mon, 05 Jun 2023 01:02:05 -0700 (PDT)
MIME-Version: 1.0
Content-Type: multipart/report; boundary="000000000000a1"; report-type=delivery-status

--000000000000a1
Content-Type: multipart/related; boundary="000000000000b2"

--000000000000b2
Content-Type: multipart/alternative; boundary="000000000000c3"

--000000000000c3
Content-Type: text/plain; charset="UTF-8"


** Address not found **

Your message wasn't delivered to nobody@example.com because the address couldn't be found, or is unable to receive mail.

Learn more here: https://support.google.com/mail/?p=NoSuchUser

The response from the remote server was:
550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in virtual mailbox table

--000000000000c3
Content-Type: text/html; charset="UTF-8"

<html><body><h2>Address not found</h2><p>Your message wasn't delivered to <b>nobody@example.com</b>
because the address couldn't be found, or is unable to receive mail.</p></body></html>

--000000000000c3--
--000000000000b2
Content-Type: image/png; name="icon.png"
Content-Disposition: attachment; filename="icon.png"
Content-Transfer-Encoding: base64
Content-ID: <icon.png>

iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==
--000000000000b2--
--000000000000a1
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; alice@sender.example
Arrival-Date: Mon, 05 Jun 2023 01:02:03 -0700 (PDT)
X-Original-Message-ID: {ORIGINAL_ID}

Final-Recipient: rfc822; nobody@example.com
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.com. (192.0.2.25, the server for the domain example.com.)
Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown
 in virtual mailbox table
Last-Attempt-Date: Mon, 05 Jun 2023 01:02:05 -0700 (PDT)

--000000000000a1
Content-Type: message/rfc822

{original_headers()}
Hello, do you have a minute this week?

--000000000000a1--
"""

GMAIL_PLAIN_BOUNCE = f"""\
Return-Path: <>
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: alice@sender.example
X-Failed-Recipients: gone@example.org
Subject: Delivery Status Notification (Failure)
Message-ID: <0016e6d7e101e5c4a2@google.com>
Date: Thu, 12 Apr 2012 09:11:31 +0000
Content-Type: text/plain; charset=ISO-8859-1

Delivery to the following recipient failed permanently:

     gone@example.org

Technical details of permanent failure:
Google tried to deliver your message, but it was rejected by the server for the recipient \
domain example.org by mx.example.org. [198.51.100.7].

The error that the other server returned was:
550-5.1.1 The email account that you tried to reach does not exist. Please try
550-5.1.1 double-checking the recipient's email address for typos or
550 5.1.1 unnecessary spaces. (mx.example.org)

----- Original message -----

{original_headers(to="gone@example.org")}
Hello, do you have a minute this week?
"""

OFFICE365_BOUNCE = f"""\
Received: from AM0PR01MB1234.eurprd01.prod.exchangelabs.com; Mon, 5 Jun 2023 08:02:04 +0000
MIME-Version: 1.0
From: Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@contoso.onmicrosoft.com>
To: <alice@contoso.com>
Date: Mon, 5 Jun 2023 08:02:04 +0000
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="e2f1c6d7-5b3a-4d9e-8c1f-0a9b8c7d6e5f"
X-MS-Exchange-Message-Is-Ndr:
Content-Language: en-US
Message-ID: <e2f1c6d7.ndr@AM0PR01MB1234.eurprd01.prod.exchangelabs.com>
In-Reply-To: {ORIGINAL_ID}
References: {ORIGINAL_ID}
Subject: Undeliverable: Quick question about your roadmap
Auto-Submitted: auto-replied

--e2f1c6d7-5b3a-4d9e-8c1f-0a9b8c7d6e5f
Content-Type: multipart/alternative; differences=Content-Type;
\tboundary="9a8b7c6d-1e2f-3a4b-5c6d-7e8f9a0b1c2d"

--9a8b7c6d-1e2f-3a4b-5c6d-7e8f9a0b1c2d
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

Your message to nobody@example.com couldn't be delivered.

nobody wasn't found at example.com.

alice     Office 365     nobody
Action Required                        Recipient
Unknown To address

How to Fix It
The address may be misspelled or may not exist. Try one or more of the following:

Diagnostic information for administrators:

Generating server: AM0PR01MB1234.eurprd01.prod.exchangelabs.com

nobody@example.com
Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient nobody@example.c=
om not found by SMTP address lookup'

Original message headers:

{original_headers()}
--9a8b7c6d-1e2f-3a4b-5c6d-7e8f9a0b1c2d
Content-Type: text/html; charset="us-ascii"

<html><body><p>Your message to nobody@example.com couldn't be delivered.</p></body></html>
--9a8b7c6d-1e2f-3a4b-5c6d-7e8f9a0b1c2d--

--e2f1c6d7-5b3a-4d9e-8c1f-0a9b8c7d6e5f
Content-Type: message/delivery-status

Reporting-MTA: dns;AM0PR01MB1234.eurprd01.prod.exchangelabs.com
Received-From-MTA: dns;AM0PR01MB5678.eurprd01.prod.exchangelabs.com
Arrival-Date: Mon, 5 Jun 2023 08:02:03 +0000

Final-Recipient: rfc822;nobody@example.com
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient nobody@example.com not found by SMTP address lookup

--e2f1c6d7-5b3a-4d9e-8c1f-0a9b8c7d6e5f
Content-Type: text/rfc822-headers

{original_headers()}
--e2f1c6d7-5b3a-4d9e-8c1f-0a9b8c7d6e5f--
"""


def postfix_report(per_recipient: str, subject: str = "Undelivered Mail Returned to Sender") -> str:
    return f"""\
Return-Path: <>
Received: by mail.sender.example (Postfix) id 4QZ9Y21234; Mon,  5 Jun 2023 10:02:09 +0200 (CEST)
Date: Mon,  5 Jun 2023 10:02:09 +0200 (CEST)
From: MAILER-DAEMON@mail.sender.example (Mail Delivery System)
Subject: {subject}
To: alice@sender.example
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4QZ9Y21234.1685952129/mail.sender.example"
Message-Id: <20230605080209.4QZ9Y21234@mail.sender.example>

This is a MIME-encapsulated message.

--4QZ9Y21234.1685952129/mail.sender.example
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.sender.example.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<nobody@example.com>: host mx.example.com[192.0.2.25] said: 550 5.1.1
    <nobody@example.com>: Recipient address rejected: User unknown (in reply to
    RCPT TO command)

--4QZ9Y21234.1685952129/mail.sender.example
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.sender.example
X-Postfix-Queue-ID: 4QZ9Y21234
X-Postfix-Sender: rfc822; alice@sender.example
Arrival-Date: Mon,  5 Jun 2023 10:02:01 +0200 (CEST)

{per_recipient}
--4QZ9Y21234.1685952129/mail.sender.example
Content-Description: Undelivered Message
Content-Type: message/rfc822

{original_headers()}
Hello, do you have a minute this week?

--4QZ9Y21234.1685952129/mail.sender.example--
"""


POSTFIX_FAILED = """\
Final-Recipient: rfc822; nobody@example.com
Original-Recipient: rfc822;Nobody@Example.com
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.com
Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.com>: Recipient address
    rejected: User unknown

Final-Recipient: rfc822; full@example.net
Action: failed
Status: 5.2.2
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; 552 5.2.2 <full@example.net>: mailbox full

Final-Recipient: rfc822; later@example.org
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-Postfix; connect to mx.example.org[203.0.113.9]:25: Connection timed out
"""

EXIM_BOUNCE = f"""\
Return-path: <>
Envelope-to: alice@sender.example
Received: from mail by mx.sender.example with local (Exim 4.96) id 1q65Yd-0001; Mon, 05 Jun 2023 10:02:07 +0200
X-Failed-Recipients: nobody@example.com
Auto-Submitted: auto-replied
From: Mail Delivery System <Mailer-Daemon@mx.sender.example>
To: alice@sender.example
Content-Type: text/plain; charset=us-ascii
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1q65Yd-0001-Ab@mx.sender.example>
Date: Mon, 05 Jun 2023 10:02:07 +0200

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  nobody@example.com
    host mx.example.com [192.0.2.25]
    SMTP error from remote mail server after RCPT TO:<nobody@example.com>:
    550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown

------ This is a copy of the message, including all the headers. ------

{original_headers()}
Hello, do you have a minute this week?
"""

# Older Exim, and the servers that copy its wording, without X-Failed-Recipients.
EXIM_PLAIN_BOUNCE = f"""\
Return-path: <>
From: Mail Delivery System <Mailer-Daemon@relay.sender.example>
To: alice@sender.example
Subject: Mail delivery failed: returning message to sender
Date: Mon, 05 Jun 2023 10:02:07 +0200

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  <full@example.net>
    host mx.example.net [198.51.100.3] said: 552 5.2.2 Mailbox full (in reply to RCPT TO)

  <blocked@example.org>
    host mx.example.org [203.0.113.5] said: 554 5.7.1 Service unavailable; Client host
    [192.0.2.1] blocked using zen.spamhaus.org

------ This is a copy of the message, including all the headers. ------

{original_headers()}
"""


def delivery_status_report(action: str, status: str, subject: str, diagnostic: str = "") -> str:
    diagnostic_field = f"Diagnostic-Code: smtp; {diagnostic}\n" if diagnostic else ""
    return f"""\
Return-Path: <>
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: alice@sender.example
Subject: {subject}
Date: Mon, 05 Jun 2023 13:02:05 -0700 (PDT)
In-Reply-To: {ORIGINAL_ID}
MIME-Version: 1.0
Content-Type: multipart/report; boundary="b1"; report-type=delivery-status

--b1
Content-Type: text/plain; charset="UTF-8"

A notice about your message to late@example.com.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Arrival-Date: Mon, 05 Jun 2023 01:02:03 -0700 (PDT)

Final-Recipient: rfc822; late@example.com
Action: {action}
Status: {status}
{diagnostic_field}
--b1
Content-Type: text/rfc822-headers

{original_headers(to="late@example.com")}
--b1--
"""


OUT_OF_OFFICE = f"""\
From: Bob Recipient <bob@example.com>
To: Alice Sender <alice@sender.example>
Subject: Automatic reply: Quick question about your roadmap
Date: Mon, 5 Jun 2023 08:02:10 +0000
Message-ID: <DB9PR01MB0001.ooo@DB9PR01MB0001.eurprd01.prod.outlook.com>
In-Reply-To: {ORIGINAL_ID}
References: {ORIGINAL_ID}
Auto-Submitted: auto-replied
X-MS-Exchange-Inbox-Rules-Loop: bob@example.com
Content-Type: text/plain; charset="us-ascii"

I am out of the office until June 12 with limited access to email.
If your message could not be delivered to the right person, write to team@example.com.
"""

ARF_COMPLAINT = f"""\
From: Complaints <feedbackloop@fbl.example.net>
To: fbl@sender.example
Subject: FW: Quick question about your roadmap
Date: Mon, 5 Jun 2023 12:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="arf"

--arf
Content-Type: text/plain; charset="US-ASCII"

This is an email abuse report for an email message received from IP 192.0.2.1.

--arf
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ExampleFBL/1.0
Version: 1
Original-Mail-From: <alice@sender.example>
Original-Rcpt-To: <annoyed@example.net>
Arrival-Date: Mon, 5 Jun 2023 10:02:04 +0000
Source-IP: 192.0.2.1

--arf
Content-Type: message/rfc822

{original_headers(to="annoyed@example.net")}
Hello, do you have a minute this week?

--arf--
"""

ORDINARY_MAIL = """\
From: Bob Recipient <bob@example.com>
To: Alice Sender <alice@sender.example>
Subject: Lunch on Thursday?
Date: Mon, 5 Jun 2023 08:02:10 +0000
Message-ID: <lunch-1@example.com>
Content-Type: text/plain; charset="utf-8"

Hi Alice, are you free for lunch on Thursday? -- Bob
"""

REPLY_QUOTING_A_FAILURE = f"""\
From: Bob Recipient <bob@example.com>
To: Alice Sender <alice@sender.example>
Subject: Re: Quick question about your roadmap
Date: Mon, 5 Jun 2023 08:02:10 +0000
Message-ID: <reply-1@example.com>
In-Reply-To: {ORIGINAL_ID}
References: {ORIGINAL_ID}
Content-Type: text/plain; charset="utf-8"

Hi Alice, your first mail bounced for me, my colleague's server said:

> Delivery failed: the following address(es) failed:
>   carol@example.com
>     550 5.1.1 User unknown

Please write to me instead.
"""


def notice_of(text: str) -> Notice:
    return parse_notice(crlf(text))


def only_recipient(notice: Notice) -> FailedRecipient:
    assert len(notice.recipients) == 1, notice
    return notice.recipients[0]


# --- bounces -----------------------------------------------------------------------------------


def test_gmail_report_is_a_hard_bounce_tied_to_its_send() -> None:
    notice = notice_of(GMAIL_BOUNCE)

    assert notice.kind is NoticeKind.BOUNCE
    recipient = only_recipient(notice)
    assert recipient.address == "nobody@example.com"
    assert (recipient.status, recipient.reply_code) == ("5.1.1", "550")
    assert recipient.reason == "userunknown"
    assert recipient.hard is True
    assert recipient.diagnostic == (
        "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in virtual mailbox table"
    )
    assert recipient.remote_mta is not None and recipient.remote_mta.startswith("mx.example.com")
    assert notice.original.send_id == SEND_ID
    assert notice.original.message_id == ORIGINAL_ID
    assert notice.original.subject == "Quick question about your roadmap"
    assert notice.references == (ORIGINAL_ID,)
    assert notice.problem is None


def test_gmail_plain_text_bounce_reads_its_quoted_original() -> None:
    notice = notice_of(GMAIL_PLAIN_BOUNCE)

    assert notice.kind is NoticeKind.BOUNCE
    recipient = only_recipient(notice)
    assert recipient.address == "gone@example.org"
    assert (recipient.status, recipient.reply_code) == ("5.1.1", "550")
    assert recipient.reason == "userunknown" and recipient.hard
    # the three lines of the multiline reply read as one (RFC 5321 section 4.2.1)
    assert recipient.diagnostic == (
        "550 5.1.1 The email account that you tried to reach does not exist. Please try"
        " double-checking the recipient's email address for typos or unnecessary spaces."
        " (mx.example.org)"
    )
    assert notice.original.send_id == SEND_ID
    assert notice.original.message_id == ORIGINAL_ID
    assert notice.original.subject == "Quick question about your roadmap"


def test_office365_ndr_keeps_microsofts_status_detail() -> None:
    notice = notice_of(OFFICE365_BOUNCE)

    assert notice.kind is NoticeKind.BOUNCE
    recipient = only_recipient(notice)
    assert recipient.address == "nobody@example.com"
    assert (recipient.status, recipient.reply_code) == ("5.1.10", "550")
    assert recipient.reason == "userunknown" and recipient.hard
    assert recipient.diagnostic is not None
    assert "RESOLVER.ADR.RecipientNotFound" in recipient.diagnostic
    assert notice.original.send_id == SEND_ID
    assert notice.original.message_id == ORIGINAL_ID
    assert notice.references == (ORIGINAL_ID,)


def test_office365_ndr_without_a_report_part_is_read_from_its_text() -> None:
    """The NDR's text alone names the recipient and Microsoft's reply."""
    text_only = OFFICE365_BOUNCE.replace("multipart/report; report-type=delivery-status;", "multipart/mixed;")
    text_only = text_only.replace(
        "Content-Type: message/delivery-status", "Content-Type: application/x-dropped"
    )

    notice = notice_of(text_only)

    assert notice.kind is NoticeKind.BOUNCE
    recipient = only_recipient(notice)
    assert recipient.address == "nobody@example.com"
    assert recipient.status == "5.1.10"
    assert recipient.reason == "userunknown" and recipient.hard
    assert notice.original.send_id == SEND_ID


def test_postfix_report_bounces_only_the_failed_recipients() -> None:
    notice = notice_of(postfix_report(POSTFIX_FAILED))

    assert notice.kind is NoticeKind.BOUNCE
    by_address = {recipient.address: recipient for recipient in notice.recipients}
    # Original-Recipient is the address as the sender wrote it (RFC 3464 section 2.3.1)
    assert set(by_address) == {"nobody@example.com", "full@example.net"}
    unknown, full = by_address["nobody@example.com"], by_address["full@example.net"]
    assert (unknown.reason, unknown.hard, unknown.status) == ("userunknown", True, "5.1.1")
    assert unknown.diagnostic == ("550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown")
    assert (full.reason, full.hard, full.reply_code) == ("mailboxfull", False, "552")
    assert notice.original.send_id == SEND_ID


def test_report_names_the_address_the_sender_wrote_not_its_alias() -> None:
    """RFC 3464 section 2.3.1: Original-Recipient is the address before forwarding."""
    aliased = """\
Final-Recipient: rfc822; mailbox-7@internal.example.com
Original-Recipient: rfc822; sales@example.com
Action: failed
Status: 5.2.2
Diagnostic-Code: smtp; 552 5.2.2 Over quota
"""
    notice = notice_of(postfix_report(aliased))

    assert notice.kind is NoticeKind.BOUNCE
    recipient = only_recipient(notice)
    assert (recipient.address, recipient.reason, recipient.hard) == (
        "sales@example.com",
        "mailboxfull",
        False,
    )


def test_exim_text_bounce_is_read_without_a_report() -> None:
    notice = notice_of(EXIM_BOUNCE)

    assert notice.kind is NoticeKind.BOUNCE
    recipient = only_recipient(notice)
    assert recipient.address == "nobody@example.com"
    assert (recipient.status, recipient.reply_code) == ("5.1.1", "550")
    assert recipient.reason == "userunknown" and recipient.hard
    assert notice.original.send_id == SEND_ID
    assert notice.original.message_id == ORIGINAL_ID


def test_plain_text_bounce_names_each_recipient_with_its_own_reason() -> None:
    notice = notice_of(EXIM_PLAIN_BOUNCE)

    assert notice.kind is NoticeKind.BOUNCE
    by_address = {recipient.address: recipient for recipient in notice.recipients}
    assert set(by_address) == {"full@example.net", "blocked@example.org"}
    full, blocked = by_address["full@example.net"], by_address["blocked@example.org"]
    assert (full.status, full.reply_code, full.reason, full.hard) == ("5.2.2", "552", "mailboxfull", False)
    assert (blocked.status, blocked.reply_code, blocked.reason) == ("5.7.1", "554", "blocked")
    assert blocked.hard is False
    assert "zen.spamhaus.org" in (blocked.diagnostic or "")
    assert notice.original.send_id == SEND_ID


def test_qmail_bounce_is_read_from_its_text() -> None:
    qmail = f"""\
Return-Path: <>
From: MAILER-DAEMON@mx.example.net
To: alice@sender.example
Subject: failure notice
Date: 5 Jun 2023 08:02:09 -0000

Hi. This is the qmail-send program at mx.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<nobody@example.net>:
Sorry, no mailbox here by that name. (#5.1.1)

--- Below this line is a copy of the message.

{original_headers(to="nobody@example.net")}
"""
    notice = notice_of(qmail)

    assert notice.kind is NoticeKind.BOUNCE
    recipient = only_recipient(notice)
    assert (recipient.address, recipient.status, recipient.reason) == (
        "nobody@example.net",
        "5.1.1",
        "userunknown",
    )
    assert recipient.diagnostic == "Sorry, no mailbox here by that name. (#5.1.1)"
    assert notice.original.send_id == SEND_ID


def test_sieve_rejection_is_a_bounce() -> None:
    """RFC 5429: a Sieve "reject" answers with an MDN whose disposition is "deleted"."""
    rejection = """\
From: Mail Delivery Subsystem <MAILER-DAEMON@example.com>
To: <alice@sender.example>
Subject: Automatically rejected mail
Auto-Submitted: auto-replied (rejected)
MIME-Version: 1.0
Content-Type: multipart/report; report-type=disposition-notification; boundary="m"

--m
Content-Type: text/plain; charset=utf-8

Your message to <full@example.com> was automatically rejected:
Quota exceeded (mailbox for user is full)
--m
Content-Type: message/disposition-notification

Reporting-UA: mail.example.com; Dovecot Mail Delivery Agent
Final-Recipient: rfc822; full@example.com
Original-Message-ID: <CAF1r8mXq2@mail.sendrail.example>
Disposition: automatic-action/MDN-sent-automatically; deleted

--m--
"""
    notice = notice_of(rejection)

    assert notice.kind is NoticeKind.BOUNCE
    recipient = only_recipient(notice)
    assert (recipient.address, recipient.reason, recipient.hard) == ("full@example.com", "mailboxfull", False)


def test_a_report_wrapped_by_a_gateway_is_read() -> None:
    wrapped = f"""\
From: postmaster@gateway.example.com
To: alice@sender.example
Subject: Delivery Status Notification (Failure)
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: message/rfc822

{postfix_report(POSTFIX_FAILED)}
--outer--
"""
    notice = notice_of(wrapped)

    assert notice.kind is NoticeKind.BOUNCE
    assert {recipient.address for recipient in notice.recipients} == {
        "nobody@example.com",
        "full@example.net",
    }
    assert notice.original.send_id == SEND_ID


def test_a_bounce_naming_no_one_is_unparseable_with_its_reason() -> None:
    anonymous = """\
From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
To: alice@sender.example
Subject: Undelivered Mail Returned to Sender
In-Reply-To: <CAF1r8mXq2@mail.sendrail.example>

Your message could not be delivered to one or more recipients.
"""
    notice = notice_of(anonymous)

    assert notice.kind is NoticeKind.UNPARSEABLE
    assert notice.recipients == ()
    assert notice.problem == "reads as a delivery failure but names no recipient"
    assert notice.references == (ORIGINAL_ID,)


def test_a_redacted_address_is_not_reported_as_another() -> None:
    redacted = delivery_status_report("failed", "5.1.1", "Delivery Status Notification (Failure)")
    redacted = redacted.replace(
        "Final-Recipient: rfc822; late@example.com", "Final-Recipient: rfc822; late...@example.com"
    )
    redacted = redacted.replace("your message to late@example.com.", "your message.")

    notice = notice_of(redacted)

    assert notice.kind is NoticeKind.UNPARSEABLE
    assert notice.recipients == ()


# --- not bounces -------------------------------------------------------------------------------


def test_delay_report_is_a_warning_never_hard() -> None:
    notice = notice_of(
        delivery_status_report(
            "delayed", "4.4.1", "Delivery Status Notification (Delay)", "421 4.4.1 Connection timed out"
        )
    )

    assert notice.kind is NoticeKind.DELAY
    recipient = only_recipient(notice)
    assert (recipient.address, recipient.status, recipient.reason) == (
        "late@example.com",
        "4.4.1",
        "networkerror",
    )
    assert recipient.hard is False
    assert notice.original.send_id == SEND_ID


def test_plain_text_delay_warning_is_a_delay() -> None:
    warning = """\
From: Mail Delivery System <Mailer-Daemon@mx.sender.example>
To: alice@sender.example
Subject: Warning: message 1q65Yd-0001 delayed 24 hours
X-Failed-Recipients: late@example.com
Auto-Submitted: auto-replied

This message was created automatically by mail delivery software.
A message that you sent has not yet been delivered to one or more of its
recipients after more than 24 hours on the queue on mx.sender.example.

  late@example.com
    Delay reason: SMTP error from remote mail server after RCPT TO:<late@example.com>:
    451 4.3.0 Temporary local problem - please try later

No action is required on your part. Delivery attempts will continue for
some time, and this warning may be repeated at intervals if the message
remains undelivered. Eventually the mail delivery software will give up,
and when that happens, the message will be returned to you.
"""
    notice = notice_of(warning)

    assert notice.kind is NoticeKind.DELAY
    recipient = only_recipient(notice)
    assert (recipient.address, recipient.status, recipient.hard) == ("late@example.com", "4.3.0", False)


def test_success_report_is_delivered() -> None:
    notice = notice_of(
        delivery_status_report("delivered", "2.0.0", "Delivery Status Notification (Success)", "250 2.0.0 OK")
    )

    assert notice.kind is NoticeKind.DELIVERED
    recipient = only_recipient(notice)
    assert (recipient.address, recipient.reason, recipient.hard) == ("late@example.com", "delivered", False)


@pytest.mark.parametrize("action", ["relayed", "expanded"])
def test_relayed_and_expanded_reports_are_delivered(action: str) -> None:
    notice = notice_of(delivery_status_report(action, "2.0.0", "Delivery Status Notification (Relay)"))

    assert notice.kind is NoticeKind.DELIVERED


def test_out_of_office_is_an_auto_reply_from_the_recipient() -> None:
    notice = notice_of(OUT_OF_OFFICE)

    assert notice.kind is NoticeKind.AUTO_REPLY
    recipient = only_recipient(notice)
    assert (recipient.address, recipient.reason, recipient.hard) == ("bob@example.com", "vacation", False)
    assert notice.references == (ORIGINAL_ID,)


@pytest.mark.parametrize(
    ("header", "subject"),
    [
        ("X-Autoreply: yes", "Re: Quick question"),
        ("Precedence: auto_reply", "Re: Quick question"),
        ("X-Mailer: Example", "Out of Office: Quick question"),
        ("X-Mailer: Example", "Automatische Antwort: Quick question"),
    ],
)
def test_auto_replies_are_recognised_by_header_or_subject(header: str, subject: str) -> None:
    reply = f"""\
From: bob@example.com
To: alice@sender.example
Subject: {subject}
{header}

I am away until Monday.
"""
    assert notice_of(reply).kind is NoticeKind.AUTO_REPLY


def test_arf_report_is_a_complaint_tied_to_its_send() -> None:
    notice = notice_of(ARF_COMPLAINT)

    assert notice.kind is NoticeKind.COMPLAINT
    recipient = only_recipient(notice)
    assert (recipient.address, recipient.reason, recipient.hard) == ("annoyed@example.net", "feedback", False)
    assert recipient.diagnostic == "abuse"
    assert notice.original.send_id == SEND_ID
    assert notice.original.message_id == ORIGINAL_ID


def test_read_receipt_is_other() -> None:
    receipt = """\
From: bob@example.com
To: alice@sender.example
Subject: Read: Quick question about your roadmap
MIME-Version: 1.0
Content-Type: multipart/report; report-type=disposition-notification; boundary="r"

--r
Content-Type: text/plain

Your message was read.
--r
Content-Type: message/disposition-notification

Final-Recipient: rfc822; bob@example.com
Disposition: manual-action/MDN-sent-manually; displayed

--r--
"""
    assert notice_of(receipt).kind is NoticeKind.OTHER


def test_ordinary_mail_is_other() -> None:
    notice = notice_of(ORDINARY_MAIL)

    assert notice.kind is NoticeKind.OTHER
    assert notice.recipients == ()
    assert notice.problem is None


def test_a_reply_that_quotes_a_delivery_failure_is_other() -> None:
    notice = notice_of(REPLY_QUOTING_A_FAILURE)

    assert notice.kind is NoticeKind.OTHER
    assert notice.references == (ORIGINAL_ID,)


# --- the original ------------------------------------------------------------------------------


def test_send_id_is_found_in_the_body_when_nothing_is_attached() -> None:
    bounce = f"""\
From: MAILER-DAEMON@mx.example.net
To: alice@sender.example
Subject: Undeliverable mail

Delivery to the following recipient failed permanently:

    nobody@example.net

Original message headers follow
> {SEND_ID_HEADER}: {SEND_ID}
"""
    notice = notice_of(bounce)

    assert notice.kind is NoticeKind.BOUNCE
    assert notice.original.send_id == SEND_ID


def test_references_are_normalised_and_deduplicated() -> None:
    mail = f"""\
From: bob@example.com
To: alice@sender.example
Subject: Re: Quick question
In-Reply-To: {ORIGINAL_ID}
References: <first@example.com>
  {ORIGINAL_ID} <first@example.com>

Sure.
"""
    assert notice_of(mail).references == (ORIGINAL_ID, "<first@example.com>")


# --- hostile input -----------------------------------------------------------------------------


def assert_well_formed(notice: Notice) -> None:
    """What every Notice promises, whatever it was read from."""
    assert isinstance(notice, Notice)
    if notice.kind is NoticeKind.BOUNCE:
        assert notice.recipients
    if notice.kind is NoticeKind.UNPARSEABLE:
        assert notice.problem
    else:
        assert notice.problem is None
    for recipient in notice.recipients:
        assert recipient.address == recipient.address.lower()
        assert "@" in recipient.address
        assert recipient.hard == (notice.kind is NoticeKind.BOUNCE and recipient.reason in HARD_REASONS)
        assert recipient.diagnostic is None or len(recipient.diagnostic) <= 500


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", "empty message"),
        (b" \r\n\t\r\n", "empty message"),
        (b"\x00" * 1000, "no header section"),
        (b"\xff\xfe\xfd binary junk", "no header section"),
    ],
)
def test_junk_is_unparseable_with_a_reason(raw: bytes, problem: str) -> None:
    notice = parse_notice(raw)

    assert notice.kind is NoticeKind.UNPARSEABLE
    assert notice.problem == problem


def test_cr_only_line_ends_are_read() -> None:
    notice = parse_notice(crlf(EXIM_BOUNCE).replace(b"\r\n", b"\r"))

    assert notice.kind is NoticeKind.BOUNCE
    assert only_recipient(notice).address == "nobody@example.com"


def test_bare_lf_line_ends_are_read() -> None:
    notice = parse_notice(GMAIL_BOUNCE.encode())

    assert notice.kind is NoticeKind.BOUNCE
    assert only_recipient(notice).reason == "userunknown"


def test_broken_base64_report_and_unknown_charset_do_not_stop_the_reading() -> None:
    broken = postfix_report(POSTFIX_FAILED).replace(
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Type: text/plain; charset=x-no-such-charset\nContent-Transfer-Encoding: base64",
    )
    broken = broken.replace(
        "Content-Type: message/delivery-status",
        "Content-Type: message/delivery-status\nContent-Transfer-Encoding: base64",
    )
    notice = notice_of(broken + "\n!!!not base64===\n")

    assert_well_formed(notice)
    assert notice.kind is NoticeKind.BOUNCE


def test_base64_encoded_report_is_decoded() -> None:
    report = POSTFIX_FAILED.replace("\n", "\r\n").encode()
    encoded = base64.encodebytes(report).decode()
    message = postfix_report("").replace(
        "Content-Type: message/delivery-status\n",
        "Content-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n",
    )
    message = message.replace("Arrival-Date: Mon,  5 Jun 2023 10:02:01 +0200 (CEST)\n\n", "")
    message = message.replace(
        "Reporting-MTA: dns; mail.sender.example\nX-Postfix-Queue-ID: 4QZ9Y21234\n"
        "X-Postfix-Sender: rfc822; alice@sender.example\n",
        encoded,
    )
    notice = notice_of(message)

    assert notice.kind is NoticeKind.BOUNCE
    assert {recipient.address for recipient in notice.recipients} == {
        "nobody@example.com",
        "full@example.net",
    }


@pytest.mark.parametrize(
    "subject",
    [b"\xff\xfe =?x-bad?q?=FF?= failed", b"=?\xe9tf-8?q?Mail?= delivery failed", b"=?utf-8?b?!!!?= failed"],
)
def test_undecodable_header_bytes_are_read(subject: bytes) -> None:
    raw = crlf(EXIM_BOUNCE).replace(b"Subject: Mail delivery failed", b"Subject: " + subject)

    notice = parse_notice(raw)

    assert_well_formed(notice)
    assert notice.problem is None
    assert notice.kind is NoticeKind.BOUNCE


def test_eight_bit_text_with_a_broken_charset_is_read() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\r\nSubject: failure notice\r\n"
        b'Content-Type: text/plain; charset="ut\x00f-8"\r\n\r\n'
        b"<nobody@example.net>:\r\n550 5.1.1 caf\xe9: unknown user\r\n"
    )

    notice = parse_notice(raw)

    assert notice.problem is None
    assert notice.kind is NoticeKind.BOUNCE
    assert only_recipient(notice).reason == "userunknown"


def test_truncated_mime_still_reads_the_report() -> None:
    raw = crlf(GMAIL_BOUNCE)
    cut = raw.index(b"Content-Type: message/rfc822")

    notice = parse_notice(raw[:cut])

    assert notice.kind is NoticeKind.BOUNCE
    assert only_recipient(notice).address == "nobody@example.com"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            b"From: a@example.com\n"
            + b"".join(
                b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (depth, depth)
                for depth in range(5000)
            )
            + b"x\n" * 100_000,
            id="deep multipart nesting",
        ),
        pytest.param(
            b"From: a@example.com\n" + b"Content-Type: message/rfc822\n\n" * 20_000 + b"Subject: x\n\nbody\n",
            id="deep message nesting",
        ),
        pytest.param(
            b"From: a@example.com\nContent-Type: multipart/mixed; boundary=b\n\n"
            + b"--b\nContent-Type: text/plain\n\nx@example.com 550 5.1.1\n" * 50_000,
            id="many parts",
        ),
        pytest.param(b"From: a@example.com\nSubject: " + b"a" * 5_000_000 + b"\n\nbody\n", id="giant header"),
        pytest.param(
            b'From: a@example.com\nContent-Type: multipart/report; a="' + b'\\"; ' * 100_000 + b"\n\nx\n",
            id="content-type parameters",
        ),
        pytest.param(
            b"From: MAILER-DAEMON@example.com\nContent-Type: text/html\n\n" + b"<a " * 150_000,
            id="unclosed html tags",
        ),
        pytest.param(
            b"X-Failed-Recipients: " + b"a@b.example, " * 400_000 + b"\n\n", id="giant address list"
        ),
        pytest.param(
            b"From: MAILER-DAEMON@example.com\nSubject: failure notice\n\n"
            + b"a@b.example: 550 5.1.1\n" * 200_000,
            id="giant bounce text",
        ),
        pytest.param(
            b"From: MAILER-DAEMON@example.com\nSubject: failure notice\n\n" + b"@" * 3_000_000,
            id="address-like noise",
        ),
    ],
)
@pytest.mark.timeout(60)  # a guard, not a figure: the cost per KiB is `sendrail bench bounces`'
def test_hostile_input_is_read_whole(raw: bytes) -> None:
    notice = parse_notice(raw)

    assert_well_formed(notice)
    assert not (notice.problem or "").startswith("parser failed")


def test_input_beyond_the_limit_is_cut_not_refused() -> None:
    padded = crlf(GMAIL_BOUNCE) + b"x" * (MAX_MESSAGE_BYTES * 2)

    notice = parse_notice(padded)

    assert notice.kind is NoticeKind.BOUNCE


SAMPLES = [
    GMAIL_BOUNCE,
    GMAIL_PLAIN_BOUNCE,
    OFFICE365_BOUNCE,
    postfix_report(POSTFIX_FAILED),
    EXIM_BOUNCE,
    ARF_COMPLAINT,
    OUT_OF_OFFICE,
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    notice = parse_notice(raw)

    assert_well_formed(notice)
    assert not (notice.problem or "").startswith("parser failed")


@st.composite
def mutated_samples(draw: st.DrawFn) -> bytes:
    raw = bytearray(crlf(draw(st.sampled_from(SAMPLES))))
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        position = draw(st.integers(min_value=0, max_value=max(0, len(raw) - 1)))
        operation = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "duplicate"]))
        if operation == "flip" and raw:
            raw[position] = draw(st.integers(min_value=0, max_value=255))
        elif operation == "delete":
            del raw[position : position + draw(st.integers(min_value=1, max_value=200))]
        elif operation == "insert":
            raw[position:position] = draw(
                st.sampled_from(
                    [
                        b"\x00",
                        b"\r",
                        b"\n\n",
                        b"--",
                        b"=?utf-8?b?",
                        b"Content-Type: multipart/mixed; boundary=x\r\n",
                        b"\xff\xfe",
                    ]
                )
            )
        elif operation == "truncate":
            del raw[position:]
        else:
            raw[position:position] = raw[position : position + 300]
    return bytes(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_samples())
def test_mutated_notices_never_raise(raw: bytes) -> None:
    notice = parse_notice(raw)

    assert_well_formed(notice)
    assert not (notice.problem or "").startswith("parser failed")
