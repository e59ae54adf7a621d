"""Bounce formats: one section per mail-system family, each notice written as that system
writes it (structure and wording as documented), read into the right kind, addresses and reason.
"""

import json

import pytest

from sendrail.bounces import NoticeKind, parse_notice

SENDER = "alice@sender.example"


def message(headers: str, body: str) -> bytes:
    """A raw notice as IMAP hands it over: CRLF line ends."""
    text = headers.strip("\n") + "\n\n" + body.lstrip("\n")
    return text.replace("\n", "\r\n").encode("utf-8")


def report(headers: str, human: str, status: str, original: str = "", charset: str = "utf-8") -> bytes:
    """An RFC 6522 multipart/report: the human part, the RFC 3464 part and returned headers."""
    parts = (
        f"--BOUNDARY\nContent-Type: text/plain; charset={charset}\n\n{human.strip()}\n\n"
        f"--BOUNDARY\nContent-Type: message/delivery-status\n\n{status.strip()}\n\n"
    )
    if original:
        parts += f"--BOUNDARY\nContent-Type: text/rfc822-headers\n\n{original.strip()}\n\n"
    parts += "--BOUNDARY--\n"
    headers = headers.strip("\n") + (
        '\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"'
    )
    return message(headers, parts)


def notice_from(sender: str, subject: str, extra: str = "") -> str:
    return f"""\
Return-Path: <>
From: {sender}
To: {SENDER}
Subject: {subject}
Date: Mon, 05 Jun 2023 10:02:05 +0200
Message-ID: <ndr-1@mx.example.net>
{extra}"""


ORIGINAL = f"""\
From: Alice <{SENDER}>
To: <nobody@example.com>
Subject: Quick question
Message-ID: <orig-1@mail.sender.example>
Date: Mon, 05 Jun 2023 10:02:01 +0200
"""


def read(raw: bytes) -> tuple[NoticeKind, list[str], list[str]]:
    notice = parse_notice(raw)
    return notice.kind, [r.address for r in notice.recipients], [r.reason for r in notice.recipients]


# --- Gmail / Google Workspace -----------------------------------------------------------------


def test_gmail_plain_text_bounce_of_the_old_form() -> None:
    raw = message(
        notice_from("Mail Delivery Subsystem <mailer-daemon@googlemail.com>", "Delivery Status Notification (Failure)"),
        """\
This is an automatically generated Delivery Status Notification

Delivery to the following recipient failed permanently:

     nobody@example.com

Technical details of permanent failure:
Google tried to deliver your message, but it was rejected by the server for the recipient domain example.com by mx.example.com. [192.0.2.1].

The error that the other server returned was:
550 5.2.2 <nobody@example.com>: Recipient mailbox is full

----- Original message -----
""" + ORIGINAL,
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["nobody@example.com"], ["mailboxfull"])


def test_google_workspace_report_for_a_disabled_account_is_soft() -> None:
    raw = report(
        notice_from("Mail Delivery Subsystem <mailer-daemon@googlemail.com>", "Delivery Status Notification (Failure)",
                    "X-Failed-Recipients: gone@workspace.example"),
        """\
** Address not found **

Your message wasn't delivered to gone@workspace.example because the account is disabled.

The response was:
550 5.2.1 The email account that you tried to reach is disabled.""",
        """\
Reporting-MTA: dns; googlemail.com

Final-Recipient: rfc822; gone@workspace.example
Action: failed
Status: 5.2.1
Diagnostic-Code: smtp; 550-5.2.1 The email account that you tried to reach is disabled. Learn more at
 550 5.2.1 https://support.google.com/mail/?p=DisabledUser a1si2 - gsmtp""",
        ORIGINAL,
    )
    notice = parse_notice(raw)
    assert notice.kind is NoticeKind.BOUNCE
    assert [(r.address, r.reason, r.hard) for r in notice.recipients] == [("gone@workspace.example", "suspend", False)]


def test_gmail_delay_is_a_warning() -> None:
    raw = message(
        notice_from("Mail Delivery Subsystem <mailer-daemon@googlemail.com>", "Delivery Status Notification (Delay)"),
        """\
This is an automatically generated Delivery Status Notification

THIS IS A WARNING MESSAGE ONLY.

YOU DO NOT NEED TO RESEND YOUR MESSAGE.

Delivery to the following recipient has been delayed:

     slow@example.org

Message will be retried for 2 more day(s)
""",
    )
    assert read(raw)[:2] == (NoticeKind.DELAY, ["slow@example.org"])


def test_gmail_success_notice_is_delivered() -> None:
    raw = message(
        notice_from("Mail Delivery Subsystem <mailer-daemon@googlemail.com>", "Delivery Status Notification (Success)"),
        """\
This is an automatically generated Delivery Status Notification.

Your message has been delivered to the following recipients:

     happy@example.org
""",
    )
    assert read(raw)[0] is NoticeKind.DELIVERED


# --- Office 365 / Exchange Online / Outlook.com -----------------------------------------------


def test_office365_report_reads_the_resolver_code() -> None:
    raw = report(
        notice_from("Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@contoso.onmicrosoft.com>",
                    "Undeliverable: Quick question", "X-MS-Exchange-Message-Is-Ndr:"),
        """\
Your message to nobody@fabrikam.example couldn't be delivered.
nobody wasn't found at fabrikam.example.

Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup'""",
        """\
Reporting-MTA: dns;AM0PR01MB1234.eurprd01.prod.outlook.com

Final-Recipient: rfc822;nobody@fabrikam.example
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup""",
    )
    notice = parse_notice(raw)
    assert [(r.address, r.status, r.reason, r.hard) for r in notice.recipients] == [
        ("nobody@fabrikam.example", "5.1.10", "userunknown", True)
    ]


def test_outlook_com_text_only_ndr_for_a_full_mailbox() -> None:
    raw = message(
        notice_from("postmaster@outlook.com", "Undeliverable: Quick question"),
        """\
Delivery has failed to these recipients or groups:

full@hotmail.example
The recipient's mailbox is full and can't accept messages now.

Diagnostic information for administrators:

Generating server: DM6PR11MB.namprd11.prod.outlook.com

full@hotmail.example
Remote Server returned '552 5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException'

Original message headers:

""" + ORIGINAL,
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["full@hotmail.example"], ["mailboxfull"])


# --- Exchange on-premises: 2007 and later, 2003, 5.5 -------------------------------------------


EXCHANGE_2007 = """\
Delivery has failed to these recipients or groups:

Jane Doe<mailto:jane@corp.example>
The e-mail address you entered couldn't be found. Please check the recipient's e-mail address and try to resend the message. If the problem continues, please contact your helpdesk.

big@corp.example
This message exceeds the maximum message size allowed.

Diagnostic information for administrators:

Generating server: ex01.corp.example

jane@corp.example
#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##

big@corp.example
#550 5.2.3 RESOLVER.RST.RecipSizeLimit; message too large for this recipient ##

Original message headers:

""" + ORIGINAL


def test_exchange_2007_gives_each_recipient_its_own_code() -> None:
    raw = message(notice_from("postmaster@corp.example", "Undeliverable: Quick question"), EXCHANGE_2007)
    notice = parse_notice(raw)
    assert notice.kind is NoticeKind.BOUNCE
    assert [(r.address, r.status, r.reason) for r in notice.recipients] == [
        ("jane@corp.example", "5.1.1", "userunknown"),
        ("big@corp.example", "5.2.3", "mesgtoobig"),
    ]


def test_exchange_ndr_header_marks_a_bounce_whatever_the_sender() -> None:
    raw = message(
        f"From: Helpdesk <help@corp.example>\nTo: {SENDER}\nSubject: Quick question\n"
        "X-MS-Exchange-Message-Is-Ndr: \nMessage-ID: <x1@corp.example>",
        EXCHANGE_2007,
    )
    assert read(raw)[:2] == (NoticeKind.BOUNCE, ["jane@corp.example", "big@corp.example"])


def test_exchange_2003_did_not_reach_the_following_recipients() -> None:
    raw = message(
        notice_from("System Administrator <postmaster@corp.example>", "Undeliverable: Quick question"),
        """\
Your message

  To:      nobody@corp.example
  Subject: Quick question
  Sent:    Mon, 5 Jun 2023 10:02:01 +0200

did not reach the following recipient(s):

nobody@corp.example on Mon, 5 Jun 2023 10:02:05 +0200
    The e-mail account does not exist at the organization this message was sent to.  Check the e-mail address, or contact the recipient directly to find out the correct address.
    <ex2003.corp.example #5.1.1>
""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["nobody@corp.example"], ["userunknown"])


def test_exchange_5_5_names_the_recipient_inside_an_x400_address() -> None:
    raw = message(
        notice_from("System Administrator <postmaster@corp.example>", "Undeliverable: Quick question"),
        """\
Your message

  To:      list@lists.example
  Subject: Quick question

did not reach the following recipient(s):

c=US;a= ;p=Corp;o=Exch;dda:SMTP=gone@corp.example; on Mon, 5 Jun 2023 10:02:05 +0200
    The recipient name is not recognized
    MSEXCH:IMS:Corp:Exch:EX01 0 (000C05A6) Unknown Recipient
""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["gone@corp.example"], ["userunknown"])


@pytest.mark.parametrize(
    ("subject", "heading", "diagnostics"),
    [
        ("Unzustellbar: Frage", "Die Zustellung an folgende Empfänger oder Gruppen ist fehlgeschlagen:",
         "Diagnoseinformationen für Administratoren:"),
        ("Non remis : Question", "La remise à ces destinataires ou groupes a échoué :",
         "Informations de diagnostic pour les administrateurs :"),
        ("No se puede entregar: Pregunta", "La entrega a estos destinatarios o grupos falló:",
         "Información de diagnóstico para administradores:"),
        ("Non recapitabile: Domanda", "Recapito non riuscito per i seguenti destinatari o gruppi:",
         "Informazioni di diagnostica per gli amministratori:"),
        ("Não é possível entregar: Pergunta", "A entrega falhou para estes destinatários ou grupos:",
         "Informações de diagnóstico para administradores:"),
        ("Onbestelbaar: Vraag", "Bezorging is mislukt voor deze ontvangers of groepen:",
         "Diagnostische gegevens voor beheerders:"),
        ("Недоставляемое сообщение: Вопрос", "Доставка не выполнена для следующих получателей или групп:",
         "Диагностические сведения для администраторов:"),
        ("配信不能: 質問", "次の受信者またはグループへの配信に失敗しました:", "管理者向けの診断情報:"),
    ],
)
def test_localised_exchange_ndrs_are_bounces(subject: str, heading: str, diagnostics: str) -> None:
    raw = message(
        notice_from("Microsoft Outlook <postmaster@contoso.example>", subject),
        f"""\
{heading}

nobody@contoso.example

{diagnostics}

Generating server: EX01.contoso.example

nobody@contoso.example
Remote Server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound; not found'
""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["nobody@contoso.example"], ["userunknown"])


# --- Yahoo, AOL, iCloud -------------------------------------------------------------------------


def test_yahoo_plain_text_bounce() -> None:
    raw = message(
        notice_from("MAILER-DAEMON@yahoo.com", "Failure Notice"),
        """\
Sorry, we were unable to deliver your message to the following address.

<nobody@example.com>:
Remote host said: 550 5.1.1 <nobody@example.com>... User unknown [RCPT_TO]

--- Below this line is a copy of the message.

""" + ORIGINAL,
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["nobody@example.com"], ["userunknown"])


def test_yahoo_with_the_mail_delivery_software_preamble_and_two_recipients() -> None:
    raw = message(
        notice_from("Mail Delivery Subsystem <MAILER-DAEMON@yahoo.com>", "Delivery Status Notification"),
        """\
This message was created automatically by mail delivery software.

Sorry, we were unable to deliver your message to the following address.

<one@example.com>:
554: delivery error: dd This user doesn't have a example.com account (one@example.com) [0] - mta1.mail.example.com

<two@example.com>:
554: delivery error: dd Sorry your message to two@example.com cannot be delivered. This account has been disabled or discontinued [#102]. - mta2.mail.example.com
""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["one@example.com", "two@example.com"], ["userunknown", "suspend"])


def test_aol_names_its_users_by_screen_name() -> None:
    raw = message(
        notice_from('"Mail Delivery Subsystem" <MAILER-DAEMON@aol.com>', "Mail Delivery Problem"),
        f"""\
Your mail to the following recipients could not be delivered because they are not accepting mail from {SENDER}:
\tscreenname
""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["screenname@aol.com"], ["filtered"])


def test_icloud_postfix_report() -> None:
    raw = report(
        notice_from("MAILER-DAEMON@ms42.mail.icloud.com (Mail Delivery System)", "Undelivered Mail Returned to Sender"),
        """\
This is the mail system at host ms42.mail.icloud.com.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<nobody@icloud.example>: host mx01.mail.icloud.com[192.0.2.7] said: 550 5.1.1
    <nobody@icloud.example>: inactive email address (in reply to RCPT TO command)""",
        """\
Reporting-MTA: dns; ms42.mail.icloud.com

Final-Recipient: rfc822; nobody@icloud.example
Original-Recipient: rfc822;nobody@icloud.example
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx01.mail.icloud.com
Diagnostic-Code: smtp; 550 5.1.1 <nobody@icloud.example>: inactive email address""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["nobody@icloud.example"], ["userunknown"])


# --- Zoho, GMX/web.de, Mail.ru, Yandex ----------------------------------------------------------


def test_zoho_error_code_line() -> None:
    raw = message(
        notice_from("mailer-daemon@mail.zoho.com", "Undelivered Mail Returned to Sender"),
        """\
This message was created automatically by mail delivery software.
A message that you sent could not be delivered to one or more of its recipients. This is a permanent error.

nobody@example.com Invalid Address, ERROR_CODE :550, ERROR_CODE :5.1.1 <nobody@example.com>... User Unknown
""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["nobody@example.com"], ["userunknown"])


def test_gmx_quoted_address_with_a_full_mailbox() -> None:
    raw = message(
        notice_from("Mail Delivery System <mailer-daemon@gmx.net>", "Mail delivery failed: returning message to sender"),
        """\
This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of
its recipients. This is a permanent error. The following address
failed:

"full@web.example":

SMTP error from remote server for RCPT TO command, host: mx.web.example (192.0.2.8) reason: 552 5.2.2 Mailbox full
""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["full@web.example"], ["mailboxfull"])


def test_mail_ru_bounce_in_russian() -> None:
    raw = message(
        notice_from("Mail Delivery System <MAILER-DAEMON@corp.mail.ru>", "Mail failure."),
        """\
Это письмо создано автоматически
сервером Mail.Ru, отвечать на него не нужно.

Ваше письмо не может
быть доставлено одному или нескольким получателям:

nobody@mail.example

Рекомендуем Вам проверить корректность указания
адресов получателей.

SMTP error from remote mail server after RCPT TO:<nobody@mail.example>:
host mx.mail.example [192.0.2.9]: 550 Message was not accepted -- invalid mailbox.
""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["nobody@mail.example"], ["userunknown"])


def test_yandex_bounce_in_russian_without_a_code() -> None:
    raw = message(
        notice_from("mailer-daemon@yandex.ru", "Недоставленное сообщение"),
        """\
Сообщение не было доставлено.

<full@yandex.example>: почтовый ящик получателя переполнен
""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["full@yandex.example"], ["mailboxfull"])


# --- Amazon SES and WorkMail, SendGrid ----------------------------------------------------------


SES_BOUNCE = {
    "notificationType": "Bounce",
    "bounce": {
        "bounceType": "Permanent",
        "bounceSubType": "General",
        "bouncedRecipients": [
            {"emailAddress": "nobody@example.com", "action": "failed", "status": "5.1.1",
             "diagnosticCode": "smtp; 550 5.1.1 user unknown"}
        ],
        "reportingMTA": "dsn; a8-52.smtp-out.amazonses.com",
    },
    "mail": {
        "source": SENDER,
        "headers": [{"name": "X-Sendrail-Send-Id", "value": "send-42"}],
        "commonHeaders": {"messageId": "<orig-1@mail.sender.example>", "subject": "Quick question"},
    },
}


def test_amazon_ses_email_report() -> None:
    raw = report(
        notice_from("MAILER-DAEMON@amazonses.com", "Delivery Status Notification (Failure)"),
        """\
An error occurred while trying to deliver the mail to the following recipients:
nobody@example.com""",
        """\
Reporting-MTA: dns; a8-52.smtp-out.amazonses.com

Action: failed
Final-Recipient: rfc822; nobody@example.com
Diagnostic-Code: smtp; 550 5.1.1 user unknown
Status: 5.1.1""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["nobody@example.com"], ["userunknown"])


def test_amazon_ses_json_notification_is_read_with_its_send() -> None:
    notice = parse_notice(json.dumps(SES_BOUNCE).encode())
    assert notice.kind is NoticeKind.BOUNCE
    assert [(r.address, r.status, r.reply_code, r.reason, r.hard) for r in notice.recipients] == [
        ("nobody@example.com", "5.1.1", "550", "userunknown", True)
    ]
    assert (notice.original.message_id, notice.original.send_id) == ("<orig-1@mail.sender.example>", "send-42")


def test_amazon_ses_notification_in_an_sns_email_is_read() -> None:
    complaint = {
        "notificationType": "Complaint",
        "complaint": {"complainedRecipients": [{"emailAddress": "angry@example.com"}],
                      "complaintFeedbackType": "abuse"},
        "mail": SES_BOUNCE["mail"],
    }
    envelope = {"Type": "Notification", "Message": json.dumps(complaint)}
    raw = message(
        f"From: AWS Notifications <no-reply@sns.amazonaws.com>\nTo: {SENDER}\nSubject: AWS Notification Message",
        json.dumps(envelope),
    )
    assert read(raw) == (NoticeKind.COMPLAINT, ["angry@example.com"], ["feedback"])


def test_amazon_ses_suppression_list_bounce_is_soft() -> None:
    record = json.loads(json.dumps(SES_BOUNCE))
    record["bounce"]["bounceSubType"] = "OnAccountSuppressionList"
    notice = parse_notice(json.dumps(record).encode())
    assert [(r.reason, r.hard) for r in notice.recipients] == [("suppressed", False)]


def test_amazon_workmail_report() -> None:
    raw = report(
        notice_from("MAILER-DAEMON@us-east-1.amazonses.com", "Delivery Status Notification (Failure)"),
        """\
We're writing to let you know that the group you tried to contact (team) may not exist, or you may not have permission to post messages to the group.

The following recipients were affected:
    team@workmail.example""",
        """\
Reporting-MTA: dns; a1-2.smtp-out.amazonses.com

Final-Recipient: rfc822; team@workmail.example
Action: failed
Status: 5.0.0
Diagnostic-Code: smtp; 550 5.1.1 Requested action not taken: mailbox unavailable""",
    )
    notice = parse_notice(raw)
    assert [(r.address, r.status, r.reason) for r in notice.recipients] == [
        ("team@workmail.example", "5.1.1", "userunknown")
    ]


def test_sendgrid_report() -> None:
    raw = report(
        notice_from("Mail Delivery System <MAILER-DAEMON@sendgrid.net>", "Undelivered Mail Returned to Sender"),
        "This is the mail system at host o1.sendgrid.net. Your message could not be delivered.",
        """\
Reporting-MTA: dns; o1.sendgrid.net

Final-Recipient: rfc822; blocked@example.org
Action: failed
Status: 5.7.1
Diagnostic-Code: smtp; 554 5.7.1 Service unavailable; Client host [192.0.2.10] blocked using zen.spamhaus.org""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["blocked@example.org"], ["blocked"])


# --- Postfix, Exim, Sendmail, qmail, OpenSMTPD, Courier -----------------------------------------


def test_postfix_plain_text_with_a_generic_status_and_full_mailbox_wording() -> None:
    raw = message(
        notice_from("MAILER-DAEMON@mx.sender.example (Mail Delivery System)", "Undelivered Mail Returned to Sender"),
        """\
This is the mail system at host mx.sender.example.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<full@example.net>: host mx.example.net[192.0.2.3] said: 550 5.0.0
    <full@example.net>: mailbox is full (in reply to RCPT TO command)
""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["full@example.net"], ["mailboxfull"])


def test_report_with_a_generic_status_takes_the_reason_from_its_words() -> None:
    raw = report(
        notice_from("MAILER-DAEMON@mx.sender.example (Mail Delivery System)", "Undelivered Mail Returned to Sender"),
        "Your message could not be delivered to full@example.net.",
        """\
Reporting-MTA: dns; mx.sender.example

Final-Recipient: rfc822; full@example.net
Action: failed
Status: 5.0.0
Diagnostic-Code: smtp; 550 Requested mail action aborted: the recipient's mailbox is full""",
    )
    notice = parse_notice(raw)
    assert [(r.address, r.status, r.reason, r.hard) for r in notice.recipients] == [
        ("full@example.net", "5.0.0", "mailboxfull", False)
    ]


def test_a_contact_address_in_the_footer_is_not_a_recipient() -> None:
    raw = message(
        notice_from("Mail Delivery System <mailer-daemon@isp.example>", "Mail delivery failed: returning message to sender"),
        """\
This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  nobody@example.org
    SMTP error from remote mail server after RCPT TO:<nobody@example.org>:
    550 5.1.1 No such user

Questions? E-mail: help@isp.example
""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["nobody@example.org"], ["userunknown"])


def test_exim_delay_warning_is_not_a_bounce() -> None:
    raw = message(
        notice_from("Mail Delivery System <Mailer-Daemon@mx.sender.example>",
                    "Warning: message 1ipHal-0002LO-QD delayed 24 hours"),
        """\
This message was created automatically by mail delivery software.
A message that you sent has not yet been delivered to one or more of its
recipients after more than 24 hours on the queue on mx.sender.example.

The address to which the message has not yet been delivered is:

  slow@example.org
    host mx.example.org [192.0.2.4]: Connection timed out

No action is required on your part. Delivery attempts will continue for
some time, and this warning may be repeated at intervals if the message
remains undelivered. Eventually the mail delivery software will give up,
and when that happens, the message will be returned to you.
""",
    )
    assert read(raw)[:2] == (NoticeKind.DELAY, ["slow@example.org"])


def test_sendmail_transcript_and_alias_expansion() -> None:
    raw = message(
        notice_from("Mail Delivery Subsystem <MAILER-DAEMON@mx.example.net>",
                    "Returned mail: see transcript for details"),
        """\
The original message was received at Mon, 5 Jun 2023 10:02:01 +0200
from mail.sender.example [192.0.2.5]

   ----- The following addresses had permanent fatal errors -----
<real@internal.example.net>
    (reason: 550 5.1.1 <real@internal.example.net>... User unknown)
    (expanded from: <alias@example.net>)

   ----- Transcript of session follows -----
... while talking to internal.example.net.:
>>> RCPT To:<real@internal.example.net>
<<< 550 5.1.1 <real@internal.example.net>... User unknown
550 5.1.1 <real@internal.example.net>... User unknown
""",
    )
    kind, addresses, reasons = read(raw)
    assert kind is NoticeKind.BOUNCE
    assert addresses == ["alias@example.net", "real@internal.example.net"]
    assert reasons == ["userunknown", "userunknown"]


def test_qmail_bounce() -> None:
    raw = message(
        notice_from("MAILER-DAEMON@qmail.example.com", "failure notice"),
        """\
Hi. This is the qmail-send program at qmail.example.com.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<nobody@example.org>:
Sorry, I couldn't find any host named example.org. (#5.1.2)

--- Below this line is a copy of the message.
""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["nobody@example.org"], ["hostunknown"])


def test_opensmtpd_bounce() -> None:
    raw = message(
        notice_from("Mailer Daemon <MAILER-DAEMON@smtpd.example.com>", "Delivery status notification: error"),
        """\
Hi!

This is the MAILER-DAEMON, please DO NOT REPLY to this email.

An error has occurred while attempting to deliver a message for
the following list of recipients:

nobody@example.org: 550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in local recipient table

Below is a copy of the original message:
""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["nobody@example.org"], ["userunknown"])


def test_courier_bounce() -> None:
    raw = message(
        notice_from("Courier mail server at mail.example.com <@>", "NOTICE: mail delivery status."),
        """\
This is a delivery status notification from mail.example.com,
running the Courier mail server, version 1.1.

The original message was received on Mon, 5 Jun 2023 10:02:01 +0200
from mail.sender.example [192.0.2.5]

---------------------------------------------------------------------------

                           UNDELIVERABLE MAIL

Your message to the following recipients cannot be delivered:

<nobody@example.org>:
    mx.example.org [192.0.2.6]:
>>> RCPT TO:<nobody@example.org>
<<< 550 5.1.1 <nobody@example.org>... User Unknown

---------------------------------------------------------------------------
""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["nobody@example.org"], ["userunknown"])


# --- Lotus Domino, Oracle Messaging Server, PowerMTA --------------------------------------------


def test_domino_not_listed_in_the_directory() -> None:
    raw = message(
        notice_from("Postmaster@domino.example.jp",
                    "DELIVERY FAILURE: User Tora (tora@domino.example.jp) not listed in Domino Directory"),
        """\
Your message

  Subject: Quick question

was not delivered to:

  tora@domino.example.jp

because:

  User Tora (tora@domino.example.jp) not listed in Domino Directory
""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["tora@domino.example.jp"], ["userunknown"])


def test_messaging_server_labels_prefer_the_original_address() -> None:
    raw = message(
        notice_from("Internet Mail Delivery <postmaster@ms.example.com>", "Delivery Notification: Delivery has failed"),
        """\
This report relates to a message you sent with the following header fields:

  Message-id: <orig-1@mail.sender.example>
  Subject: Quick question

Your message cannot be delivered to the following recipients:

  Recipient address: user@internal.ms.example.com
  Original address: user@ms.example.com
  Reason: Remote SMTP server has rejected address
  Diagnostic code: smtp;550 5.1.1 unknown or illegal alias: user@internal.ms.example.com
  Remote system: dns;mx.internal.ms.example.com
""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["user@ms.example.com"], ["userunknown"])


def test_powermta_bounce_category_names_the_reason() -> None:
    raw = report(
        notice_from("MAILER-DAEMON@pmta.example.com", "Delivery report"),
        "The following recipient could not be reached.",
        """\
Reporting-MTA: dns; pmta.example.com

Final-Recipient: rfc822; nobody@example.org
Action: failed
Status: 5.0.0 (undefined status)
Remote-MTA: dns; mx.example.org
Diagnostic-Code: smtp; 550 Requested action not taken
X-PowerMTA-BounceCategory: bad-mailbox""",
    )
    notice = parse_notice(raw)
    assert [(r.address, r.reason, r.hard) for r in notice.recipients] == [("nobody@example.org", "userunknown", True)]


# --- Filters: Barracuda, Mimecast, Proofpoint, Trend Micro, McAfee ------------------------------


def test_barracuda_bulk_mail_rejection_is_spam() -> None:
    raw = report(
        notice_from("MAILER-DAEMON <>", "**Message you sent blocked by our bulk email filter**"),
        "Your message to: nobody@example.org\nwas blocked by our Spam Firewall.",
        """\
Reporting-MTA: dns; barracuda.example.org

Final-Recipient: rfc822; nobody@example.org
Action: failed
Status: 5.7.1
Diagnostic-Code: smtp; 550 5.7.1 Message content rejected, UBE, id=00000-22-225""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["nobody@example.org"], ["spamdetected"])


def test_mimecast_rejection_relayed_by_postfix() -> None:
    raw = message(
        notice_from("MAILER-DAEMON@mx.sender.example (Mail Delivery System)", "Undelivered Mail Returned to Sender"),
        """\
This is the mail system at host mx.sender.example.

<nobody@mimecast.example>: host eu-smtp-inbound-1.mimecast.com[192.0.2.11] said:
    550 Invalid Recipient - https://community.mimecast.com/docs/DOC-1369#550
    [abcDEF.uk1] (in reply to RCPT TO command)
""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["nobody@mimecast.example"], ["userunknown"])


def test_proofpoint_reputation_block() -> None:
    raw = message(
        notice_from("MAILER-DAEMON@mx.sender.example (Mail Delivery System)", "Undelivered Mail Returned to Sender"),
        """\
<ceo@pp.example>: host mx0a.pphosted.com[192.0.2.12] said: 554 5.7.1 Service
    unavailable; Client host [192.0.2.5] blocked using Proofpoint dynamic
    reputation (in reply to RCPT TO command)
""",
    )
    assert read(raw)[:2] == (NoticeKind.BOUNCE, ["ceo@pp.example"])
    assert read(raw)[2][0] in {"blocked", "badreputation"}


def test_trend_micro_transcript() -> None:
    raw = message(
        notice_from("Postmaster@imss.example.co.jp", "Undeliverable Mail"),
        """\
Sent <<< RCPT TO:<nobody@example.co.jp>
Received >>> 550 5.1.1 <nobody@example.co.jp>... User unknown

Unable to deliver message to <nobody@example.co.jp>.
""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["nobody@example.co.jp"], ["userunknown"])


def test_mcafee_delivery_problems_list() -> None:
    raw = message(
        notice_from("<MAILER-DAEMON@gw.example.ne.jp>", "Delivery Status"),
        """\
    --- The following addresses had delivery problems ---

<nobody@example.co.jp>   (Unknown user nobody@example.co.jp)
""",
    )
    assert read(raw) == (NoticeKind.BOUNCE, ["nobody@example.co.jp"], ["userunknown"])


# --- Localised plain-text bounces ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "body", "reason"),
    [
        ("Unzustellbar", "Ihre Nachricht konnte nicht zugestellt werden an:\n\nnobody@example.de\n\nBenutzer unbekannt",
         "userunknown"),
        ("Non remis", "Votre message n'a pas pu être remis à :\n\nnobody@example.fr\n\nBoîte aux lettres pleine",
         "mailboxfull"),
        ("No se puede entregar", "No se pudo entregar su mensaje a:\n\nnobody@example.es\n\nUsuario desconocido",
         "userunknown"),
        ("Non recapitabile", "Impossibile recapitare il messaggio a:\n\nnobody@example.it\n\nCasella piena",
         "mailboxfull"),
        ("Não é possível entregar", "Não foi possível entregar a mensagem para:\n\nnobody@example.pt\n\n"
         "Usuário desconhecido", "userunknown"),
        ("Onbestelbaar", "Uw bericht kon niet worden bezorgd aan:\n\nnobody@example.nl\n\nOnbekende gebruiker",
         "userunknown"),
        ("Недоставленное сообщение", "Ваше сообщение не может быть доставлено:\n\nnobody@example.ru\n\n"
         "Пользователь не найден", "userunknown"),
        ("配信不能", "次の宛先へ配信できませんでした:\n\nnobody@example.jp\n\nメールボックスがいっぱいです",
         "mailboxfull"),
    ],
)
def test_localised_plain_text_bounces(subject: str, body: str, reason: str) -> None:
    raw = message(notice_from("postmaster@mx.example.net", subject), body)
    kind, addresses, reasons = read(raw)
    assert kind is NoticeKind.BOUNCE
    assert len(addresses) == 1 and addresses[0].startswith("nobody@")
    assert reasons == [reason]


# --- Not bounces --------------------------------------------------------------------------------


def test_newsletter_is_not_a_bounce() -> None:
    raw = message(
        "From: Shop News <news@shop.example>\nTo: alice@sender.example\nSubject: Delivery update: free shipping"
        "\nList-Unsubscribe: <mailto:unsub@shop.example>\nMessage-ID: <n1@shop.example>",
        "Good news! Orders over 50 EUR ship free. If a parcel could not be delivered, contact help@shop.example.\n",
    )
    assert read(raw)[0] is NoticeKind.OTHER


def test_human_reply_quoting_an_ndr_is_not_a_bounce() -> None:
    raw = message(
        f"From: Bob <bob@example.org>\nTo: {SENDER}\nSubject: RE: Undeliverable: Quick question\n"
        "Message-ID: <r1@example.org>",
        "Hi Alice, I got this back, can you check?\n\n> Delivery has failed to these recipients or groups:\n"
        "> nobody@example.com\n> #550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##\n",
    )
    assert read(raw)[0] is NoticeKind.OTHER


def test_exchange_relayed_notice_is_a_success() -> None:
    raw = message(
        notice_from("Microsoft Exchange <postmaster@corp.example>", "Relayed: Quick question"),
        """\
Delivery to these recipients or groups is complete, but no delivery notification was sent by the destination server:

nobody@example.com

Subject: Quick question
""",
    )
    assert read(raw)[0] is NoticeKind.DELIVERED


def test_localised_out_of_office_is_an_auto_reply() -> None:
    raw = message(
        f"From: Klaus <klaus@example.de>\nTo: {SENDER}\nSubject: Abwesenheitsnotiz: Quick question\n"
        "Message-ID: <oof@example.de>",
        "Ich bin bis zum 12. Juni nicht im Büro und habe keinen Zugriff auf E-Mails.\n",
    )
    kind, addresses, reasons = read(raw)
    assert (kind, addresses, reasons) == (NoticeKind.AUTO_REPLY, ["klaus@example.de"], ["vacation"])


def test_auto_reply_that_mentions_delivery_is_still_an_auto_reply() -> None:
    raw = message(
        f"Return-Path: <>\nFrom: Help <help@example.org>\nTo: {SENDER}\nSubject: Automatic reply: Quick question\n"
        "Auto-Submitted: auto-replied\nMessage-ID: <ar@example.org>",
        "Thanks, we received your message. If your message could not be delivered, please call us.\n",
    )
    assert read(raw)[0] is NoticeKind.AUTO_REPLY


def test_postmaster_digest_is_not_a_bounce() -> None:
    raw = message(
        f"From: postmaster@corp.example\nTo: {SENDER}\nSubject: Your quarantine summary\nMessage-ID: <q@corp.example>",
        "3 messages are waiting in quarantine:\n\nfrom promo@ads.example: Big sale\n",
    )
    assert read(raw)[0] is not NoticeKind.BOUNCE
