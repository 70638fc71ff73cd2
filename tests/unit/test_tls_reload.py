"""gateway/tls.py: the listener's context from server.tls_certificate/tls_key, and the reload of a renewed pair:
when the files changed (the minute's check) or when asked (SIGHUP), never a half-written renewal.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from gateway import tls
from gateway.config import ServerConfig
from tests.tlsca import Authority


async def served_serial(context: ssl.SSLContext, client: ssl.SSLContext) -> int:
    """The serial of the certificate a new TLS connection to a server on `context` is handshaken with."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="127.0.0.1")
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return int(x509.load_der_x509_certificate(der).serial_number)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_changed_pair_is_loaded_once_and_a_broken_one_never(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    authority = Authority.make(tmp_path / "ca")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    first = authority.issue(cert, key)
    config = ServerConfig(tls_certificate=str(cert), tls_key=str(key))
    context = tls.server_context(config)
    assert context is not None and context.minimum_version == ssl.TLSVersion.TLSv1_2
    reloader = tls.Reloader(context, config)
    client = authority.client()
    assert reloader.reload(only_if_changed=True) is False  # nothing changed: nothing read
    assert await served_serial(context, client) == first

    second = authority.issue(cert, key)  # a renewal, as certbot writes it
    assert reloader.reload(only_if_changed=True) is True
    assert reloader.reload(only_if_changed=True) is False  # loaded once
    assert await served_serial(context, client) == second

    # Half a renewal: the new certificate is written, its key not yet (the old key stays beside it).
    authority.issue(cert, tmp_path / "next.key")
    with caplog.at_level(logging.ERROR, logger="gateway.tls"):
        assert reloader.reload(only_if_changed=True) is False
    assert "not reloaded" in caplog.text
    assert await served_serial(context, client) == second  # the pair before is still served, whole
    assert reloader.reload(only_if_changed=True) is False  # not retried until the files change again
    key.write_bytes((tmp_path / "next.key").read_bytes())  # the renewal completes
    assert reloader.reload(only_if_changed=True) is True
    third = await served_serial(context, client)
    assert third != second

    # A renewal that deletes, then writes the files: the moment between is not a failed reload, only a wait.
    caplog.clear()
    key.unlink()
    with caplog.at_level(logging.ERROR, logger="gateway.tls"):
        assert reloader.reload(only_if_changed=True) is False
    assert caplog.text == ""
    fourth = authority.issue(cert, key)
    assert reloader.reload(only_if_changed=True) is True
    assert await served_serial(context, client) == fourth


def test_plain_http_has_no_context() -> None:
    assert tls.server_context(ServerConfig()) is None


async def test_a_renewal_to_another_key_type_serves_the_new_certificate(tmp_path: Path) -> None:
    """OpenSSL keeps one certificate per key type in a context: loaded into the listener's own context, an RSA
    renewal of an EC certificate was a "successful" reload that went on serving the old EC certificate."""
    authority = Authority.make(tmp_path / "ca")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    authority.issue(cert, key)
    config = ServerConfig(tls_certificate=str(cert), tls_key=str(key))
    reloader = tls.Reloader.load(config)
    assert reloader is not None
    renewed = authority.issue(cert, key, rsa_key=True)
    assert reloader.reload() is True
    assert await served_serial(reloader.context, authority.client()) == renewed
