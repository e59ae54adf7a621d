"""Smaller TLS read buffers: data of any size still arrives whole, through a real TLS session."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import datetime
import ssl
from pathlib import Path

import pytest

from sendrail.mail.tls import TLS_READ_BUFFER_BYTES, client_tls_context, limit_tls_read_buffers
from sendrail.sandbox.tls import create_certificates
from sendrail.settings import TlsSettings

PAYLOAD = bytes(range(256)) * 4096 + b"end"  # 1 MiB and a bit: many buffers' worth


async def test_a_large_reply_arrives_whole_through_the_smaller_buffer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio.sslproto.SSLProtocol, "max_size",
                        asyncio.sslproto.SSLProtocol.max_size)  # restored after the test
    limit_tls_read_buffers()
    assert asyncio.sslproto.SSLProtocol.max_size == TLS_READ_BUFFER_BYTES

    certificates = create_certificates(tmp_path, now=datetime.datetime.now(datetime.UTC))
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(certificates.cert_file, certificates.key_file)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(PAYLOAD)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_tls_context(TlsSettings(ca_file=certificates.ca_file)),
            server_hostname="localhost")
        ssl_protocol = writer.transport._ssl_protocol  # type: ignore[attr-defined]
        assert len(ssl_protocol._ssl_buffer) == TLS_READ_BUFFER_BYTES
        writer.write(b"send it\n")
        async with asyncio.timeout(30):
            received = await reader.read(-1)
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert received == PAYLOAD
