"""Readiness told to a service manager: systemd's notify protocol (sd_notify(3): `READY=1` as a datagram to the
socket named by $NOTIFY_SOCKET), so `systemctl start` returns, and a reload is sent, only once the gateway serves.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("gateway")


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1") when started by a manager that asked for it; True when sent."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket (Linux): its name starts with a NUL byte
        address = "\0" + address[1:]
    # The lines that led here (`listening on`) are written before the state: log lines wait in a buffer
    # (log_output.py), and a manager (or a reader of its journal) must not hear "ready" before them.
    for handler in logging.getLogger().handlers:
        handler.flush()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("cannot notify the service manager (%s): %s", state, exc)
        return False
    return True
