"""Gmail's SMTP replies and what they mean (PRODUCT.md section 3; replies end in "- gsmtp")."""

from sendrail.mail.replies import ReplyAction, rule

GMAIL_RULES = (
    rule(550, r"^5\.4\.5\b", ReplyAction.PAUSE,
         "the mailbox reached Gmail's daily sending quota; its mail waits for the window"),
    rule(421, r"^4\.7\.0\b|^4\.4\.5\b", ReplyAction.RETRY, "Gmail asks to try again later"),
    rule(450, r"^4\.2\.1\b", ReplyAction.RETRY, "Gmail says mail is arriving too quickly"),
    rule(452, r"^4\.5\.3\b", ReplyAction.REJECT,
         "more recipients than Gmail accepts in one message over SMTP (100)"),
    rule(535, r"^5\.7\.8\b", ReplyAction.BROKEN,
         "Gmail refused the credentials: the user must connect the mailbox again"),
    rule(534, r"^5\.7\.9\b", ReplyAction.BROKEN,
         "Gmail requires another way to sign in: the user must connect the mailbox again"),
    rule(454, r"^4\.7\.0\b", ReplyAction.RETRY, "too many login attempts; backing off"),
)
