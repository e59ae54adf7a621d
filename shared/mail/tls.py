"""The TLS context of every client connection: verification on, TLS 1.2 at least."""

from __future__ import annotations

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
