"""The TLS context of every client connection: verification on, TLS 1.2 at least."""

from __future__ import annotations

import asyncio.sslproto
import ssl

from sendrail.settings import TlsSettings


def client_tls_context(settings: TlsSettings) -> ssl.SSLContext:
    """The system's trust store, plus `ca_file` when set (the local sandbox's CA).

    There is deliberately no switch to turn verification off.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # Exchange Online requires TLS 1.2+
    if settings.ca_file is not None:
        context.load_verify_locations(cafile=str(settings.ca_file))
    return context


TLS_READ_BUFFER_BYTES = 16 * 1024
"""About one TLS record (at most 16 KiB of data, RFC 8446 §5.1): a record that does not fit
is read in two calls, and OpenSSL reassembles it."""


def limit_tls_read_buffers(size_bytes: int = TLS_READ_BUFFER_BYTES) -> None:
    """asyncio gives every TLS connection a read buffer of `SSLProtocol.max_size` (256 KiB),
    zero-filled and so resident: a sender holding 1,000 SMTP sessions, or a watcher holding
    1,000 IMAP sessions, spent 256 MB on buffers that SMTP replies and IMAP responses
    barely touch. A smaller buffer only means that a large read takes a few more calls.
    Process-wide; the services that hold many sessions call it when they start."""
    asyncio.sslproto.SSLProtocol.max_size = size_bytes
