"""Exchange Online's SMTP replies and what they mean (PRODUCT.md section 3)."""

from sendrail.delivery.outcome import OutcomeKind
from sendrail.mail.replies import rule

EXCHANGE_ONLINE_RULES = (
    rule(554, r"^5\.2\.0\b.*SubmissionQuotaExceeded", OutcomeKind.PAUSE,
         "the mailbox reached Exchange Online's daily recipient limit; its mail waits"),
    rule(432, r"^4\.3\.2\b", OutcomeKind.RETRY, "too many connections to the mailbox; retrying with fewer"),
    rule(554, r"^5\.2\.2\b", OutcomeKind.PAUSE,
         "the sender's own mailbox is full (sent items are stored there): free space in it"),
    rule(550, r"^5\.2\.25[1-5]\b", OutcomeKind.PAUSE,
         "Microsoft throttles this mailbox after repeated errors; it waits before sending again"),
    rule(535, r"^5\.7\.139\b|SmtpClientAuthentication is disabled", OutcomeKind.BROKEN,
         "SMTP AUTH is disabled for this mailbox: an Exchange admin must enable it"),
    rule(535, r"^5\.7\.3\b", OutcomeKind.BROKEN,
         "Exchange Online refused the credentials: the user must connect the mailbox again"),
    rule(550, r"^5\.7\.30\b", OutcomeKind.BROKEN,
         "basic authentication is not supported: the mailbox must be connected with OAuth"),
    rule(None, r"^5\.7\.70[58]\b", OutcomeKind.BROKEN,
         "Microsoft denies access to this tenant: its admin must resolve it with Microsoft"),
    rule(None, r"^5\.1\.8\b", OutcomeKind.BROKEN,
         "Microsoft has blocked this sender: an admin must release it"),
    rule(550, r"^5\.7\.60\b", OutcomeKind.FAILED,
         "the mailbox may not send as this from-address"),
)
