"""Gmail's SMTP replies and what they mean (PRODUCT.md section 3; replies end in "- gsmtp")."""

from sendrail.delivery.outcome import OutcomeKind
from sendrail.mail.replies import rule

GMAIL_RULES = (
    rule(550, r"^5\.4\.5\b", OutcomeKind.PAUSE,
         "the mailbox reached Gmail's daily sending quota; its mail waits for the window"),
    rule(421, r"^4\.7\.0\b|^4\.4\.5\b", OutcomeKind.RETRY, "Gmail asks to try again later"),
    rule(450, r"^4\.2\.1\b", OutcomeKind.RETRY, "Gmail says mail is arriving too quickly"),
    rule(452, r"^4\.5\.3\b", OutcomeKind.FAILED,
         "more recipients than Gmail accepts in one message over SMTP (100)"),
    rule(535, r"^5\.7\.8\b", OutcomeKind.BROKEN,
         "Gmail refused the credentials: the user must connect the mailbox again"),
    rule(534, r"^5\.7\.9\b", OutcomeKind.BROKEN,
         "Gmail requires another way to sign in: the user must connect the mailbox again"),
    rule(454, r"^4\.7\.0\b", OutcomeKind.RETRY, "too many login attempts; backing off"),
)
