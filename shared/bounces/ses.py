"""Amazon SES notifications: the JSON bounce, complaint and delivery records SES publishes.

SES sends these through Amazon SNS (an email subscription delivers the JSON as the body, an
SNS envelope may wrap it in "Message") or as event publishing records ("eventType" instead of
"notificationType"). Amazon SES Developer Guide, "Amazon SNS notification contents".
"""

import json
from collections.abc import Mapping
from typing import Final

from sendrail.bounces.notice import FailedRecipient, NoticeKind, OriginalMessage
from sendrail.bounces.reasons import Reason, classify, find_statuses, is_hard
from sendrail.mail.headers import SEND_ID_HEADER

MAX_JSON_CHARS: Final = 256 * 1024
MAX_RECIPIENTS: Final = 100

# bounceSubType values that say more than the SMTP reply SES quotes.
_SUBTYPE_REASONS: Final[Mapping[str, Reason]] = {
    "suppressed": Reason.SUPPRESSED,
    "onaccountsuppressionlist": Reason.SUPPRESSED,
    "mailboxfull": Reason.MAILBOXFULL,
    "messagetoolarge": Reason.MESGTOOBIG,
    "contentrejected": Reason.CONTENTERROR,
    "attachmentrejected": Reason.SECURITYERROR,
    "noemail": Reason.USERUNKNOWN,
}


def read_ses_notification(text: str) -> tuple[NoticeKind, list[FailedRecipient], OriginalMessage] | None:
    """The notice an SES JSON record makes and the sent email it names, or None when the text
    is not one."""
    record = _record(text)
    if record is None:
        return None
    read = _read_record(record)
    return None if read is None else (*read, _original(_mapping(record.get("mail"))))


def _read_record(record: Mapping[str, object]) -> tuple[NoticeKind, list[FailedRecipient]] | None:
    kind = str(record.get("notificationType") or record.get("eventType") or "").lower()
    if kind == "bounce":
        return NoticeKind.BOUNCE, _bounced(_mapping(record.get("bounce")))
    if kind == "complaint":
        complaint = _mapping(record.get("complaint"))
        feedback = str(complaint.get("complaintFeedbackType") or "") or None
        return NoticeKind.COMPLAINT, [
            FailedRecipient(address, None, None, feedback, Reason.FEEDBACK.value, False)
            for address in _addresses(complaint.get("complainedRecipients"))
        ]
    if kind == "delivery":
        delivery = _mapping(record.get("delivery"))
        recipients = delivery.get("recipients")
        listed = recipients if isinstance(recipients, list) else []
        addresses = [str(a).strip().lower() for a in listed if isinstance(a, str)]
        return NoticeKind.DELIVERED, [
            FailedRecipient(address, None, None, None, Reason.DELIVERED.value, False)
            for address in addresses[:MAX_RECIPIENTS]
            if "@" in address
        ]
    return None


def _record(text: str) -> Mapping[str, object] | None:
    stripped = text.strip()
    if not stripped.startswith("{") or len(stripped) > MAX_JSON_CHARS:
        return None
    try:
        record = json.loads(stripped)
        # An SNS envelope carries the SES record as a JSON string in "Message".
        if isinstance(record, dict) and isinstance(record.get("Message"), str):
            record = json.loads(record["Message"])
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or not ("notificationType" in record or "eventType" in record):
        return None
    return record


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, dict) else {}


def _addresses(entries: object) -> list[str]:
    if not isinstance(entries, list):
        return []
    found = [str(_mapping(entry).get("emailAddress") or "").strip().lower() for entry in entries]
    return [address for address in found if "@" in address][:MAX_RECIPIENTS]


def _bounced(bounce: Mapping[str, object]) -> list[FailedRecipient]:
    """Each bounced recipient, with the status and reply SES quotes; bounceType "Permanent"
    is a hard bounce only where the reason says the address is bad."""
    subtype = _SUBTYPE_REASONS.get(str(bounce.get("bounceSubType") or "").lower())
    entries = bounce.get("bouncedRecipients")
    recipients: list[FailedRecipient] = []
    for entry in entries[:MAX_RECIPIENTS] if isinstance(entries, list) else []:
        fields = _mapping(entry)
        address = str(fields.get("emailAddress") or "").strip().lower()
        if "@" not in address:
            continue
        diagnostic = " ".join(str(fields.get("diagnosticCode") or "").split())[:500] or None
        statuses = find_statuses(str(fields.get("status") or "")) or find_statuses(diagnostic or "")
        status = statuses[0] if statuses else None
        reply = next((word for word in (diagnostic or "").replace(";", " ").split() if word[:1] in "45"
                      and len(word) == 3 and word.isdigit()), None)
        reason = subtype.value if subtype is not None else classify(status, reply, diagnostic)
        recipients.append(FailedRecipient(address, status, reply, diagnostic, reason, is_hard(reason)))
    return recipients


def _original(mail: Mapping[str, object]) -> OriginalMessage:
    """The sent email as the record's "mail" object describes it: its headers when SES was
    asked to include them, else commonHeaders."""
    common = _mapping(mail.get("commonHeaders"))
    headers = mail.get("headers")
    named = {
        str(_mapping(header).get("name") or "").lower(): str(_mapping(header).get("value") or "")
        for header in (headers if isinstance(headers, list) else [])[:200]
    }
    message_id = str(common.get("messageId") or named.get("message-id") or "").strip() or None
    if message_id is not None and not message_id.startswith("<"):
        message_id = f"<{message_id}>"
    subject = str(common.get("subject") or named.get("subject") or "").strip() or None
    send_id = named.get(SEND_ID_HEADER.lower(), "").strip() or None
    return OriginalMessage(message_id, send_id, subject)
