"""The hot-path read cache: bounded, aged by a monotonic clock, cleared by writes."""

from __future__ import annotations

from gateway.store.cache import TTLCache


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_entries_age_out_and_the_size_is_bounded() -> None:
    ticks = Ticks()
    cache: TTLCache[str] = TTLCache(ttl=1.0, size=2, clock=ticks)
    cache.put("a", "A")
    ticks.now = 0.999
    assert cache.get("a") == "A"
    ticks.now = 1.0  # exactly ttl old: gone
    assert cache.get("a") is None
    for key in "bcd":
        cache.put(key, key.upper())
    assert len(cache) == 2 and cache.get("b") is None and cache.get("d") == "D"
    cache.clear()
    assert cache.get("d") is None


def test_zero_ttl_disables_caching() -> None:
    cache: TTLCache[str] = TTLCache(ttl=0)
    cache.put("a", "A")
    assert cache.get("a") is None
