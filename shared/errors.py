"""sendrail's error tree: one root, branches by what the caller should do next.

Adapters convert their libraries' errors into these at the boundary and keep the
original as `__cause__` (as httpx does), so the send loop decides on kinds, not on
library types.
"""


class SendrailError(Exception):
    """Root of every error sendrail raises on purpose."""


class ConfigurationError(SendrailError):
    """Settings or stored data that sendrail cannot work with; a person must fix them."""


class DeliveryError(SendrailError):
    """A send did not go through. `reply_code`/`reply_text` keep the server's words."""

    def __init__(self, reason: str, *, reply_code: int | None = None, reply_text: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.reply_code = reply_code
        self.reply_text = reply_text


class TransientError(DeliveryError):
    """Try again later, with backoff (4xx replies, dropped connections, timeouts)."""


class PermanentError(DeliveryError):
    """This message will never go through as it is; do not retry."""


class ConnectionBroken(DeliveryError):
    """The connection's credentials no longer work; its mail waits until the user reconnects."""
