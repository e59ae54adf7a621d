"""Notices in providers' wording, as anyone could write them and mail them to a user."""

from __future__ import annotations


def gmail_plain_notice(to: str, failed: str, *, in_reply_to: str | None = None,
                       message_id: str = "<0016e6d7e101e5c4a2@google.com>") -> bytes:
    """An older Gmail bounce (plain text) saying `failed` does not exist; with `in_reply_to`,
    it claims to answer that message, as a recipient who has it could write."""
    threading = (f"In-Reply-To: {in_reply_to}\r\nReferences: {in_reply_to}\r\n"
                 if in_reply_to else "")
    return (
        "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\r\n"
        f"To: {to}\r\n"
        f"X-Failed-Recipients: {failed}\r\n"
        "Subject: Delivery Status Notification (Failure)\r\n"
        f"{threading}"
        f"Message-ID: {message_id}\r\n"
        "Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n"
        "Content-Type: text/plain; charset=ISO-8859-1\r\n"
        "\r\n"
        "Delivery to the following recipient failed permanently:\r\n"
        "\r\n"
        f"     {failed}\r\n"
        "\r\n"
        "Technical details of permanent failure:\r\n"
        "Google tried to deliver your message, but it was rejected by the server for the\r\n"
        "recipient domain by mx.example.org. [198.51.100.7].\r\n"
        "\r\n"
        "The error that the other server returned was:\r\n"
        "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n"
        "550-5.1.1 double-checking the recipient's email address for typos or\r\n"
        "550 5.1.1 unnecessary spaces. (mx.example.org)\r\n"
    ).encode()
