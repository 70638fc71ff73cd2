"""Tokens' last use (GitLab's `last_used_at` / `last_used_ips`): noted in memory per process on every successful
authentication, written by the audit flush task at most once a minute per token, never on the request path."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.errors import StoreUnavailable
from gateway.store.base import Store, TokenKind, TokenUse

log = logging.getLogger("gateway.last_use")

# GitLab updates last_used_at and last_used_ips "once per minute per token" and keeps the five most recent
# distinct addresses (PersonalAccessTokens::LastUsedService, API docs of last_used_ips).
INTERVAL = timedelta(minutes=1)
KEEP_IPS = 5
MAX_TOKENS = 100_000  # memory bound: tokens seen but not yet written (each a few hundred bytes)


@dataclass
class _Seen:
    at: datetime
    ips: list[str] = field(default_factory=list)  # newest first, distinct
    written: datetime | None = None
    dirty: bool = True


class LastUse:
    """What this process saw since the last write, per token."""

    def __init__(self, interval: timedelta = INTERVAL, keep_ips: int = KEEP_IPS, max_tokens: int = MAX_TOKENS) -> None:
        self.interval, self.keep_ips, self.max_tokens = interval, keep_ips, max_tokens
        self._seen: dict[tuple[TokenKind, int], _Seen] = {}
        self.writes = 0  # store writes made (tests and metrics count them)

    def used(self, kind: TokenKind, token_id: int, ip: str, now: datetime) -> None:
        key = (kind, token_id)
        seen = self._seen.get(key)
        if seen is None:
            if len(self._seen) >= self.max_tokens:
                return  # a flood of distinct tokens: their last use waits for a later request, memory stays bounded
            seen = self._seen[key] = _Seen(now)
        seen.at, seen.dirty = now, True
        if not seen.ips or seen.ips[0] != ip:
            seen.ips = [ip, *(x for x in seen.ips if x != ip)][: self.keep_ips]

    def due(self, now: datetime) -> list[TokenUse]:
        """Uses to write now: seen since the last write, and that write at least `interval` ago."""
        return [
            TokenUse(kind, token_id, seen.at, tuple(seen.ips))
            for (kind, token_id), seen in self._seen.items()
            if seen.dirty and (seen.written is None or now - seen.written >= self.interval)
        ]

    async def flush(self, store: Store, now: datetime) -> int:
        """Write what is due; the store skips tokens another process wrote less than a minute before."""
        written = 0
        for use in self.due(now):
            try:
                if await store.record_token_use(
                    use, min_interval=self.interval.total_seconds(), keep_ips=self.keep_ips
                ):
                    written += 1
                    self.writes += 1
            except StoreUnavailable as exc:
                log.warning("last use of tokens not written: %s", exc)
                return written  # kept dirty: tried again at the next flush
            seen = self._seen[(use.kind, use.token_id)]
            seen.written, seen.dirty = now, False
        # Forget tokens written a while ago and not used since: their next use starts afresh (and the store's
        # check still holds the once-a-minute rule across processes).
        for key in [k for k, s in self._seen.items() if not s.dirty and s.written and now - s.written >= self.interval]:
            del self._seen[key]
        return written
