"""Exchange Online's SMTP replies and what they mean (PRODUCT.md section 3)."""

from sendrail.mail.replies import ReplyAction, rule

EXCHANGE_ONLINE_RULES = (
    rule(554, r"^5\.2\.0\b.*SubmissionQuotaExceeded", ReplyAction.PAUSE,
         "the mailbox reached Exchange Online's daily recipient limit; its mail waits"),
    rule(432, r"^4\.3\.2\b", ReplyAction.RETRY, "too many connections to the mailbox; retrying with fewer"),
    rule(554, r"^5\.2\.2\b", ReplyAction.PAUSE,
         "the sender's own mailbox is full (sent items are stored there): free space in it"),
    rule(550, r"^5\.2\.25[1-5]\b", ReplyAction.PAUSE,
         "Microsoft throttles this mailbox after repeated errors; it waits before sending again"),
    rule(535, r"^5\.7\.139\b|SmtpClientAuthentication is disabled", ReplyAction.BROKEN,
         "SMTP AUTH is disabled for this mailbox: an Exchange admin must enable it"),
    rule(535, r"^5\.7\.3\b", ReplyAction.BROKEN,
         "Exchange Online refused the credentials: the user must connect the mailbox again"),
    rule(550, r"^5\.7\.30\b", ReplyAction.BROKEN,
         "basic authentication is not supported: the mailbox must be connected with OAuth"),
    rule(None, r"^5\.7\.70[58]\b", ReplyAction.BROKEN,
         "Microsoft denies access to this tenant: its admin must resolve it with Microsoft"),
    rule(None, r"^5\.1\.8\b", ReplyAction.BROKEN,
         "Microsoft has blocked this sender: an admin must release it"),
    rule(550, r"^5\.7\.60\b", ReplyAction.REJECT,
         "the mailbox may not send as this from-address"),
)
