"""A limit on failed password sign-ins per username (the web form, git and /jwt/auth Basic), in a sliding window, in
memory (the per-address ban is bruteforce.py).

It stops a guesser who spreads one account's guesses over many addresses, or who resets the address count with a
credential of their own. Like GitLab's account lock after failed sign-ins, the password is refused meanwhile, the
right one too, for at most `window`: tokens, signed-in sessions and a browser that signed in as the user before
(web/devices.py) are unaffected. Per process: with N workers or replicas a guesser gets N times the limit, still a
handful.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from datetime import datetime, timedelta

from gateway.errors import TooManyAttempts

MESSAGE = "Too many failed sign-in attempts for this user"


class LockedOut(TooManyAttempts):
    """The username's failures reached the limit: its password is not checked until the oldest ages out."""

    def __init__(self, status: int, retry_after: int) -> None:
        super().__init__(MESSAGE, status, retry_after)


def username_key(username: str) -> str:
    """Usernames are case-insensitive like sign-in itself."""
    return username.strip().lower()[:255]


class LoginThrottle:
    """`limit` failures within `window` block further attempts on the same username until the oldest ages out."""

    def __init__(self, limit: int = 10, window: timedelta = timedelta(minutes=3), max_keys: int = 100_000) -> None:
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._failures: OrderedDict[str, deque[datetime]] = OrderedDict()

    def _recent(self, key: str, now: datetime) -> deque[datetime]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, username: str, now: datetime) -> int:
        """0 when the attempt may go ahead, else the seconds until it may (for Retry-After)."""
        times = self._recent(username_key(username), now)
        if len(times) < self.limit:
            return 0
        # The deque keeps the last `limit` failures: times[0] ages out first.
        wait = times[0] + self.window - now
        return max(1, int(wait.total_seconds() + 0.999))

    def failed(self, username: str, now: datetime) -> None:
        key = username_key(username)
        times = self._failures.get(key) or deque(maxlen=self.limit)
        times.append(now)
        self._failures[key] = times
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:  # bounded memory under a spray of names
            self._failures.popitem(last=False)

    def succeeded(self, username: str) -> None:
        """A correct password clears that username's failures."""
        self._failures.pop(username_key(username), None)
