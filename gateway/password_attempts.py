"""Password checks in flight, per client address and per username: a few at a time, the others wait their turn and
then meet the ban or the username limit their predecessors' failures set (found by a review: 300 guesses sent at
once were all checked, because a failure counts only once its Argon2 check is over).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

# Per address: a NAT's few simultaneous sign-ins go ahead; per username: one check at a time.
ADDRESS_SLOTS = 2
USERNAME_SLOTS = 1


class Turns:
    """At most `limit` holders per key; a key's semaphore lives while someone holds or waits for it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._keys: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        semaphore, users = self._keys.get(key) or (asyncio.Semaphore(self.limit), 0)
        self._keys[key] = (semaphore, users + 1)
        try:
            async with semaphore:
                yield
        finally:
            semaphore, users = self._keys[key]
            if users == 1:
                del self._keys[key]
            else:
                self._keys[key] = (semaphore, users - 1)

    def __len__(self) -> int:
        return len(self._keys)


class PasswordAttempts:
    """This process's password checks in flight (each worker and replica has its own: N times the slots)."""

    def __init__(self) -> None:
        self.addresses = Turns(ADDRESS_SLOTS)
        self.usernames = Turns(USERNAME_SLOTS)

    @asynccontextmanager
    async def turn(self, address: str | None, username: str) -> AsyncIterator[None]:
        """Wait for a turn of the client address (None: not counted, allowlisted) and of the username; the caller
        checks the ban and the username limit again once it has it."""
        async with AsyncExitStack() as stack:
            if address is not None:
                await stack.enter_async_context(self.addresses.turn(address))
            await stack.enter_async_context(self.usernames.turn(username))
            yield
