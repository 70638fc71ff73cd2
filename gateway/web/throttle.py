"""A limit on failed sign-ins, per client address and per username, in a sliding window, in memory.

Per process: with several replicas an attacker gets the limit once per replica, which still turns an online
password guess from thousands per minute into a handful. (Hardening work may move this to the shared store.)
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from datetime import datetime, timedelta
from ipaddress import ip_address

Key = tuple[str, str]


def keys(client: str, username: str) -> tuple[Key, Key]:
    """The counters a sign-in attempt touches; usernames are case-insensitive like sign-in itself."""
    return ("ip", client), ("user", username.strip().lower()[:255])


def client_address(remote: str | None, forwarded_for: str | None, trusted_proxies: Iterable[str]) -> str:
    """The client's address: the peer, or behind a trusted proxy the last X-Forwarded-For hop it did not add."""
    trusted = set(trusted_proxies)
    address = remote or "unknown"
    if address in trusted and forwarded_for:
        for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
            try:
                hop = str(ip_address(hop))
            except ValueError:
                break  # a forged or garbled entry: stop at the last address we could trust
            address = hop
            if hop not in trusted:
                break
    return address


class LoginThrottle:
    """`limit` failures within `window` block further attempts on the same key until the oldest one ages out."""

    def __init__(self, limit: int = 10, window: timedelta = timedelta(minutes=3), max_keys: int = 100_000) -> None:
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._failures: OrderedDict[Key, deque[datetime]] = OrderedDict()

    def _recent(self, key: Key, now: datetime) -> deque[datetime]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, attempt: Iterable[Key], now: datetime) -> int:
        """0 when the attempt may go ahead, else the seconds until it may (for Retry-After)."""
        wait = timedelta(0)
        for key in attempt:
            times = self._recent(key, now)
            if len(times) >= self.limit:  # the deque keeps the last `limit` failures: times[0] ages out first
                wait = max(wait, times[0] + self.window - now)
        return max(1, int(wait.total_seconds() + 0.999)) if wait > timedelta(0) else 0

    def failed(self, attempt: Iterable[Key], now: datetime) -> None:
        for key in attempt:
            times = self._failures.get(key) or deque(maxlen=self.limit)
            times.append(now)
            self._failures[key] = times
            self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:  # bounded memory under a spray of addresses or names
            self._failures.popitem(last=False)

    def succeeded(self, key: Key) -> None:
        """A correct password clears that username's failures (the address keeps its own count)."""
        self._failures.pop(key, None)
