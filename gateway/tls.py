"""TLS on the gateway's own port (server.tls_certificate, server.tls_key): the server's SSL context, and a renewed
certificate served without a restart (on SIGHUP, and when the files change).
"""

from __future__ import annotations

import logging
import os
import shutil
import ssl
import tempfile
from pathlib import Path

from gateway.config import ServerConfig
from gateway.errors import ConfigError
from gateway.file_stamps import Stamp, stamp

log = logging.getLogger("gateway.tls")

# How often the files are looked at for a renewal that nobody signalled (certbot without a deploy hook).
CHECK_INTERVAL = 60.0


def _load(certificate: Path, key: Path) -> ssl.SSLContext:
    """A new context holding the pair, read from a snapshot (each file read once: a renewal half-written, the
    certificate new and the key still old, is refused whole). TLS 1.2 and newer, HTTP/1.1 by ALPN (git, docker and
    pip all speak it), Python's secure defaults for the ciphers."""
    for setting, path in (("server.tls_certificate", certificate), ("server.tls_key", key)):
        if not path.is_file():
            raise ConfigError(f"{setting}: {path} is missing")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    with tempfile.TemporaryDirectory(prefix="gateway-tls-") as folder:
        copies = Path(folder) / "certificate.pem", Path(folder) / "key.pem"
        try:
            shutil.copyfile(certificate, copies[0])
            shutil.copyfile(key, copies[1])
        except OSError as exc:
            raise ConfigError(
                f"server.tls_certificate / server.tls_key: cannot read {exc.filename}: {exc.strerror}"
            ) from None
        try:
            context.load_cert_chain(*copies)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"server.tls_certificate {certificate} and server.tls_key {key} do not make a certificate and its"
                f" key ({exc.reason or exc})"
            ) from None
    return context


def server_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The listener's TLS context, None for plain HTTP (TLS ends in a load balancer, or nowhere)."""
    if not config.tls_certificate:
        return None
    return _load(Path(config.tls_certificate), Path(config.tls_key))


class Reloader:
    """Loads the certificate again into the live context (new connections get it, open ones keep theirs) when asked
    (SIGHUP) or when the files changed; a pair that does not load is logged and the one in use stays."""

    def __init__(self, context: ssl.SSLContext, config: ServerConfig, loaded: Stamp | None = None) -> None:
        # `context` is the listener's for good; each reload makes a whole new context, which every handshake from
        # then on switches to (SNI callback, called with or without a server name). Loading into the listener's
        # own context instead would keep a certificate of another key type beside the new one: OpenSSL holds one
        # per key type, and a renewal from EC to RSA would go on serving the old EC certificate.
        self.context = self.current = context
        context.sni_callback = self._switch
        self.paths = Path(config.tls_certificate), Path(config.tls_key)
        # The files as they were when the context was loaded: a change after that, even one made while the
        # server started, is a change to load (taken after the load, the stamp would hide it).
        self.loaded = loaded if loaded is not None else self._current()

    @classmethod
    def load(cls, config: ServerConfig) -> Reloader | None:
        """The listener's context with its reloader (None: plain HTTP); the files' stamp taken before reading."""
        if not config.tls_certificate:
            return None
        loaded = stamp((Path(config.tls_certificate), Path(config.tls_key)))
        context = server_context(config)
        assert context is not None
        return cls(context, config, loaded)

    def _switch(self, connection: ssl.SSLObject, server_name: str | None, listener: ssl.SSLContext) -> None:
        if self.current is not listener:
            connection.context = self.current

    def _current(self) -> Stamp:
        return stamp(self.paths)

    def reload(self, *, only_if_changed: bool = False) -> bool:
        now = self._current()
        # A file missing: a renewal replacing the files right now, looked at again next time.
        if only_if_changed and (None in now or now == self.loaded):
            return False
        try:
            self.current = _load(*self.paths)
        except ConfigError as exc:
            log.error("TLS certificate not reloaded, the one loaded before is still served: %s", exc)
            self.loaded = now  # not retried until the files change again
            return False
        self.loaded = now
        log.info("TLS certificate reloaded from %s (pid %d)", self.paths[0], os.getpid())
        return True
