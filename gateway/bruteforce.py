"""Failed authentication ban (GitLab's Gitlab::Auth::IpRateLimiter): `max_failures` bad secrets from one client
address within `find_time` ban it for `ban_time`; counted in the store, so every worker and replica shares them.

Cost model: a failure is one store write; a success is free unless its address has failures on record; the ban
check is a dict lookup in this process's view of the bans, refreshed from the store every REFRESH_INTERVAL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from datetime import datetime, timedelta
from ipaddress import IPv6Address, ip_address, ip_network

from aiohttp import web

from gateway.clients import AddressSet, Clients
from gateway.clock import Clock
from gateway.config import BruteForceConfig
from gateway.errors import StoreUnavailable, TooManyAttempts
from gateway.middleware import family_of
from gateway.store.base import Store

log = logging.getLogger("gateway.bruteforce")

REFRESH_INTERVAL = 1.0  # seconds: how stale another process's ban may be here (it bans by itself meanwhile)
PRUNE_EVERY = 60  # refreshes between two deletions of rows whose window is over
MAX_ENTRIES = 100_000  # addresses held in memory (bans and failing addresses each): bounded under a spray
# A refresh reads rows updated since the previous one, minus this margin: a failure stamped just before our read
# but committed just after it is still seen next time.
SLACK = timedelta(seconds=5)
# GitLab's Gitlab::Auth::IpBlocked message; git shows it as "remote: ...".
MESSAGE = "Too many failed authentication attempts from this IP"
# GitLab answers a banned client 403 on git and /jwt/auth (rate_limits/abuse_bans); 403 also stops git from
# asking for (or erasing) credentials. The other families get 429, the status of every GitLab rate limit.
FORBIDDEN_FAMILIES = frozenset({"git", "registry_auth"})


class Banned(TooManyAttempts):
    """The client address is banned: refused before any credential is read, with the seconds left (Retry-After)."""

    def __init__(self, status: int, retry_after: int) -> None:
        super().__init__(MESSAGE, status, retry_after)


def ban_key(address: str) -> str:
    """What is counted and banned: the IPv4 address, or the /64 of an IPv6 one (one host's usual allocation, so
    an attacker cannot step through its 2^64 addresses)."""
    if ":" not in address:
        return address
    try:
        parsed = ip_address(address)
    except ValueError:
        return address
    if not isinstance(parsed, IPv6Address):  # pragma: no cover - clients.normal maps v4-in-v6 already
        return str(parsed)
    return str(ip_network(f"{parsed}/64", strict=False))


class Guard:
    """This process's view of failures and bans, and the writes that share them through the store."""

    def __init__(self, config: BruteForceConfig, clients: Clients, clock: Clock, *, max_entries: int = MAX_ENTRIES):
        self.enabled = config.enabled
        self.max_failures = config.max_failures
        self.find_time = timedelta(seconds=config.find_time)
        self.ban_time = timedelta(seconds=config.ban_time)
        self.allowlist = AddressSet(config.allowlist, key="bruteforce.allowlist")
        self.clients, self.clock, self.max_entries = clients, clock, max_entries
        self.store: Store | None = None  # attached at startup (app.py), once the store is open
        self._bans: dict[str, datetime] = {}  # key → end of its ban
        # key → its last failure, for addresses whose failures may still be on record: only their successes write.
        self._failing: OrderedDict[str, datetime] = OrderedDict()
        self._own_bans: dict[str, tuple[datetime, float]] = {}  # bans this process made: (until, monotonic time)
        self._since: datetime | None = None
        self._refreshes = 0

    # --- the request path ---------------------------------------------------------------------------------------

    def client(self, request: web.Request) -> str | None:
        """The key counted for this request's client; None when nothing is counted (disabled or allowlisted)."""
        if not self.enabled:
            return None
        address = self.clients.address(request)
        if self.allowlist and address in self.allowlist:
            return None
        return ban_key(address)

    def retry_after(self, key: str | None) -> int:
        """0 when the key is not banned, else the whole seconds its ban still lasts."""
        if key is None or not self._bans:
            return 0
        until = self._bans.get(key)
        if until is None:
            return 0
        left = (until - self.clock.now()).total_seconds()
        if left <= 0:
            del self._bans[key]
            return 0
        return max(1, int(left + 0.999))

    def admit(self, request: web.Request) -> str | None:
        """The client's key; raises Banned (403 for git and /jwt/auth, 429 elsewhere) while it is banned."""
        key = self.client(request)
        wait = self.retry_after(key)
        if wait:
            raise Banned(403 if family_of(request) in FORBIDDEN_FAMILIES else 429, wait)
        return key

    async def failed(self, key: str | None) -> None:
        """A bad secret: counted in the store; past the limit, the address is banned everywhere."""
        if key is None or self.store is None:
            return
        now = self.clock.now()
        failures = await self.store.record_auth_failure(key, now=now, window_start_after=now - self.find_time)
        self._note_failing(key, now)
        if failures >= self.max_failures:
            until = now + self.ban_time
            await self.store.ban_address(key, until=until, now=now)
            self._bans[key] = until
            self._own_bans[key] = (until, time.monotonic())
            self._failing.pop(key, None)
            log.warning(
                "client %s banned for %d s after %d failed authentications",
                key,
                self.ban_time.total_seconds(),
                failures,
            )

    async def succeeded(self, key: str | None) -> None:
        """A good secret resets the count (GitLab: "reset by requests that authenticate successfully"); a store
        write only when this address has failures on record."""
        if key is None or self.store is None or not self._failing:
            return
        last = self._failing.pop(key, None)
        if last is None or last <= self.clock.now() - self.find_time:
            return  # nothing recorded, or its window is over anyway
        await self.store.clear_auth_failures(key, now=self.clock.now())

    def _note_failing(self, key: str, at: datetime) -> None:
        previous = self._failing.get(key)
        self._failing[key] = at if previous is None or at > previous else previous
        self._failing.move_to_end(key)
        while len(self._failing) > self.max_entries:
            self._failing.popitem(last=False)

    # --- keeping the view fresh -------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Take the bans from the store (all of them, up to max_entries) and the failures since the last refresh;
        every PRUNE_EVERY refreshes, delete the rows whose window is over."""
        if self.store is None or not self.enabled:
            return
        started, now = time.monotonic(), self.clock.now()
        cutoff = now - self.find_time
        since = max(self._since - SLACK, cutoff) if self._since is not None else cutoff
        rows = await self.store.list_auth_failures(now=now, updated_since=since, limit=self.max_entries)
        bans: dict[str, datetime] = {}
        for row in reversed(rows):  # oldest first, so the newest end up last in the LRU
            if row.banned_until is not None and row.banned_until > now:
                bans[row.address] = row.banned_until
            elif row.failures > 0 and row.updated_at > cutoff:
                self._note_failing(row.address, row.updated_at)
        # A ban this process made while the query ran may be missing from its answer: keep it until the next one.
        for key, (until, made) in list(self._own_bans.items()):
            if made >= started:
                bans.setdefault(key, until)
            else:
                del self._own_bans[key]
        self._bans = bans
        while self._failing:  # roughly oldest first: drop addresses whose window is over
            key, last = next(iter(self._failing.items()))
            if last > cutoff:
                break
            del self._failing[key]
        self._since = now
        self._refreshes += 1
        if self._refreshes % PRUNE_EVERY == 0:
            await self.store.delete_stale_auth_failures(now=now, updated_before=cutoff)

    async def keep_fresh(self, interval: float = REFRESH_INTERVAL) -> None:
        """Refresh forever (a background task of each process); an unavailable store skips a round."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except StoreUnavailable as exc:
                log.warning("failed authentication bans not refreshed: %s", exc)
            except Exception:  # never let the task die: the next round may succeed
                log.exception("failed authentication bans not refreshed")
