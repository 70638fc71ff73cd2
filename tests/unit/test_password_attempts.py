"""Password checks in flight (gateway/password_attempts.py): turns per key, and no key kept once nobody waits."""

from __future__ import annotations

import asyncio

import pytest

from gateway.password_attempts import ADDRESS_SLOTS, PasswordAttempts


async def test_a_username_has_one_turn_and_an_address_a_few() -> None:
    attempts = PasswordAttempts()
    inside: list[str] = []
    most = {"alice": 0, "addr": 0}
    release = asyncio.Event()

    async def attempt(address: str | None, username: str) -> None:
        async with attempts.turn(address, username):
            inside.append(username)
            most["alice"] = max(most["alice"], inside.count("alice"))
            most["addr"] = max(most["addr"], len(inside))
            await release.wait()
            inside.remove(username)

    names = ["bob", "carol", "dan", "alice", "alice", "alice"]
    tasks = [asyncio.create_task(attempt("203.0.113.1", name)) for name in names]
    await asyncio.sleep(0.01)
    assert len(inside) == ADDRESS_SLOTS  # the rest wait for the address
    release.set()
    await asyncio.gather(*tasks)
    assert most == {"alice": 1, "addr": ADDRESS_SLOTS}
    assert len(attempts.addresses) == 0 and len(attempts.usernames) == 0


@pytest.mark.parametrize("ending", ["error", "cancelled"])
async def test_a_turn_ended_early_frees_its_key(ending: str) -> None:
    attempts = PasswordAttempts()
    started = asyncio.Event()

    async def attempt() -> None:
        async with attempts.turn(None, "alice"):
            started.set()
            if ending == "error":
                raise ValueError("boom")
            await asyncio.sleep(60)

    task = asyncio.create_task(attempt())
    await started.wait()
    if ending == "cancelled":
        task.cancel()
    with pytest.raises(ValueError if ending == "error" else asyncio.CancelledError):
        await task
    assert len(attempts.usernames) == 0
    async with attempts.turn(None, "alice"):  # and the next one gets its turn at once
        pass
