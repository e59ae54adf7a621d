"""Mail on the wire: building messages, the SMTP and IMAP adapters, OAuth2 tokens."""
