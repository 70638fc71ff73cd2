"""Who the client is and how it reached us: the peer's address and the request's scheme and host, or behind trusted
reverse proxies the X-Forwarded-For hop, X-Forwarded-Proto and X-Forwarded-Host they vouch for. One definition for
every family (bans, the sign-in limit, the URLs the gateway hands back, the headers it forwards).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from aiohttp import web

from gateway.errors import ConfigError

CLIENT_ADDRESS = web.RequestKey("client_address", str)  # computed once per request by Clients.address
# ipaddress parses take microseconds each (2.5 µs for an IPv4 address on 3.11) and a request behind a proxy needs
# several: parses and range checks are remembered, for this many distinct strings each.
PARSED = 65_536
# A host as it may stand in a URL we build (RFC 3986 reg-name or IP literal, optional port); anything else a proxy
# forwards is ignored rather than copied into Link, Location or realm URLs.
_HOST = re.compile(r"\A(?:[A-Za-z0-9._~!$&'()*+,;=%-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?\Z")


def normal(address: str) -> str:
    """One spelling per address: IPv6 compressed, an IPv4-mapped IPv6 address (a dual-stack socket) as IPv4."""
    if ":" not in address:
        return address  # IPv4 as the kernel reports it is already canonical: skip the parse on the hot path
    return _canonical(address) or address


@lru_cache(maxsize=PARSED)
def _canonical(text: str) -> str | None:
    """The address in `text` spelled one way, or None when it is none (a forged X-Forwarded-For entry)."""
    try:
        parsed = ip_address(text.strip())
    except ValueError:
        return None
    mapped = getattr(parsed, "ipv4_mapped", None)
    return str(mapped or parsed)


class AddressSet:
    """Addresses and CIDR ranges (`10.0.0.1`, `10.0.0.0/8`, `2001:db8::/32`), as GitLab's trusted_proxies takes."""

    def __init__(self, entries: Iterable[str], *, key: str = "addresses") -> None:
        networks: list[IPv4Network | IPv6Network] = []
        for entry in entries:
            try:
                networks.append(ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ConfigError(f"{key}: {entry!r} is not an IP address or CIDR range") from None
        # Single addresses are a set lookup on the string; only ranges need a parse of the address.
        self._exact = frozenset(str(n.network_address) for n in networks if n.num_addresses == 1)
        self._ranges = tuple(n for n in networks if n.num_addresses > 1)
        self._in_range = lru_cache(maxsize=PARSED)(self._in_any_range)

    def __bool__(self) -> bool:
        return bool(self._exact or self._ranges)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        if address in self._exact:
            return True
        return bool(self._ranges) and self._in_range(address)

    def _in_any_range(self, address: str) -> bool:
        try:
            parsed = ip_address(address)
        except ValueError:
            return False
        return any(parsed in net for net in self._ranges)  # a v4 address is simply not in a v6 range


def client_address(remote: str | None, forwarded_for: str | None, trusted: AddressSet | Iterable[str]) -> str:
    """The peer, or behind a trusted proxy the last X-Forwarded-For hop that no trusted proxy added.

    Proxies append the address they received from, so the list is read from the right: every hop a trusted proxy
    wrote is believed, the first hop written by anyone else is the client (what it wrote further left is not).
    Per request, prefer Clients.address (the proxies parsed once, the answer kept on the request).
    """
    if not isinstance(trusted, AddressSet):
        trusted = AddressSet(trusted, key="server.trusted_proxies")
    address = normal(remote) if remote else "unknown"
    if forwarded_for and address in trusted:
        for entry in reversed(forwarded_for.split(",")):
            hop = _canonical(entry)
            if hop is None:
                break  # a forged or garbled entry: stop at the last address we could trust
            address = hop
            if hop not in trusted:
                break
    return address


class Clients:
    """The client address of a request under the configured trusted proxies (server.trusted_proxies)."""

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self.trusted = AddressSet(trusted_proxies, key="server.trusted_proxies")

    def address(self, request: web.Request) -> str:
        remote = request.remote  # reified by aiohttp: read once per request
        if not self.trusted:  # nobody may name another client: the peer it is, with no header read
            return normal(remote) if remote else "unknown"
        known: str | None = request.get(CLIENT_ADDRESS)
        if known is not None:
            return known
        forwarded = ", ".join(request.headers.getall("X-Forwarded-For", ())) or None
        address = client_address(remote, forwarded, self.trusted)
        request[CLIENT_ADDRESS] = address
        return address

    def _from_proxy(self, request: web.Request) -> bool:
        return bool(self.trusted) and normal(request.remote or "") in self.trusted

    def scheme(self, request: web.Request) -> str:
        """http or https as the client used it: a trusted proxy's X-Forwarded-Proto (the leftmost, the hop nearest
        the client), else the connection's own."""
        if self._from_proxy(request):
            forwarded = request.headers.get("X-Forwarded-Proto", "").split(",", 1)[0].strip().lower()
            if forwarded in ("http", "https"):
                return forwarded
        return request.scheme

    def host(self, request: web.Request) -> str:
        """The host (and port) the client addressed: a trusted proxy's X-Forwarded-Host, else the Host header."""
        if self._from_proxy(request):
            forwarded = request.headers.get("X-Forwarded-Host", "").split(",", 1)[0].strip()
            if _HOST.match(forwarded):
                return forwarded
        return request.host

    def origin(self, request: web.Request) -> str:
        """scheme://host as the client addressed the gateway."""
        return f"{self.scheme(request)}://{self.host(request)}"


# The app's Clients, under server.trusted_proxies (app.py sets it).
CLIENTS = web.AppKey("clients", Clients)
# For an app without one (a bare forwarding app in tests): no proxy is trusted, the connection is the client's.
DIRECT = Clients(())
