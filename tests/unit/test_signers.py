"""The signing threads: every job's result or exception reaches its awaiting request, results come back in batches,
a request that goes away does not disturb the others, and a new event loop replaces the threads of the old one."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gateway import signing_keys


def _sign_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("jwt-sign_")]


async def test_every_job_gets_its_own_result_or_exception() -> None:
    def job(n: int) -> int:
        time.sleep(0.001)  # releases the GIL, as OpenSSL does while it signs
        if n % 7 == 0:
            raise ValueError(f"job {n}")
        return n * n

    results = await asyncio.gather(
        *(signing_keys.in_signer_thread(lambda n=n: job(n)) for n in range(1, 200)), return_exceptions=True
    )
    for n, result in enumerate(results, start=1):
        if n % 7 == 0:
            assert isinstance(result, ValueError) and str(result) == f"job {n}"
        else:
            assert result == n * n


async def test_results_are_delivered_in_batches() -> None:
    loop = asyncio.get_running_loop()
    signers = signing_keys._Signers(loop, 2)
    deliveries = 0
    deliver = signers._deliver

    def counting() -> None:
        nonlocal deliveries
        deliveries += 1
        deliver()

    signers._deliver = counting  # type: ignore[method-assign]
    try:
        jobs = [signers.run(lambda: time.sleep(0.0005)) for _ in range(300)]
        await asyncio.gather(*jobs)
    finally:
        signers.close()
    assert 0 < deliveries < 300  # one loop wake-up settles every job finished meanwhile


async def test_a_request_that_goes_away_does_not_disturb_the_others() -> None:
    gate = threading.Event()
    leaver = asyncio.ensure_future(signing_keys.in_signer_thread(lambda: gate.wait(5)))
    stayer = asyncio.ensure_future(signing_keys.in_signer_thread(lambda: gate.wait(5) and "signed"))
    await asyncio.sleep(0.01)
    leaver.cancel()
    gate.set()
    assert await stayer == "signed"
    with pytest.raises(asyncio.CancelledError):
        await leaver


def test_a_new_event_loop_replaces_the_threads_of_the_old_one() -> None:
    asyncio.run(signing_keys.in_signer_thread(lambda: 1))
    first = set(_sign_threads())
    asyncio.run(signing_keys.in_signer_thread(lambda: 2))
    deadline = time.monotonic() + 5
    while any(t.is_alive() for t in first) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.is_alive() for t in first)
    assert _sign_threads()  # the new loop's threads
