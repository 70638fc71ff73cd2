"""Web UI sign-in and sessions (no browser): cookie flags, server-side sessions kept as digests, sign-out, expiry,
blocked users, session fixation, login CSRF, safe redirects after sign-in, and the failed sign-in limit."""

from __future__ import annotations

import gc
import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.secretbox import SecretBox
from gateway.store.sqlite import SQLiteStore
from gateway.web import devices, sessions
from tests.conftest import make_config
from tests.webui import LOGIN_COOKIE, SESSION_COOKIE, cookie, csrf_of, post_form, sign_in, signed_in
from tests.world import World


async def make_client(
    aiohttp_client: Any,
    aiohttp_server: Any,
    tmp_path: Path,
    store: SQLiteStore,
    clock: FixedClock,
    box: SecretBox,
    bruteforce: dict[str, Any] | None = None,
    **server: Any,
) -> TestClient:
    config = make_config(tmp_path, server=server, bruteforce=bruteforce or {})
    app = create_app(config, store=store, clock=clock, box=box)
    return await aiohttp_client(await aiohttp_server(app, auto_decompress=False))


@pytest.fixture
async def behind_proxy(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path, store: SQLiteStore, clock: FixedClock, box: SecretBox
) -> TestClient:
    """A gateway whose test client (127.0.0.1) is a trusted proxy: X-Forwarded-For names the client address."""
    return await make_client(aiohttp_client, aiohttp_server, tmp_path, store, clock, box, trusted_proxies=["127.0.0.1"])


def set_cookie_header(response: Any, name: str) -> str:
    headers = [h for h in response.headers.getall("Set-Cookie", []) if h.startswith(f"{name}=")]
    assert len(headers) == 1, response.headers
    return headers[0]


@pytest.mark.parametrize(
    ("server", "sent", "secure"),
    [
        ({}, {}, False),
        ({"external_url": "https://gitlab.example.com"}, {}, True),
        # A TLS-terminating proxy the operator trusts says the browser used https.
        ({"trusted_proxies": ["127.0.0.1"]}, {"X-Forwarded-Proto": "https"}, True),
        ({}, {"X-Forwarded-Proto": "https"}, False),  # anyone else saying so is not believed
    ],
    ids=["plain", "external-https", "trusted-proxy-https", "untrusted-claim"],
)
async def test_session_cookie_flags(
    aiohttp_client: Any,
    aiohttp_server: Any,
    tmp_path: Path,
    store: SQLiteStore,
    clock: FixedClock,
    box: SecretBox,
    world: World,
    server: dict[str, Any],
    sent: dict[str, str],
    secure: bool,
) -> None:
    client = await make_client(aiohttp_client, aiohttp_server, tmp_path, store, clock, box, **server)
    alice = await world.user("alice")
    page = await client.get("/-/login", headers=sent)
    login_cookie = set_cookie_header(page, LOGIN_COOKIE)
    assert ("; secure" in login_cookie.lower()) is secure
    # The test client speaks plain http, so it would not send a Secure cookie back: send it as a browser would.
    response = await client.post(
        "/-/login",
        data={"authenticity_token": csrf_of(await page.text()), "username": "alice", "password": alice.password},
        headers={"Cookie": login_cookie.split(";")[0], **sent},
        allow_redirects=False,
    )
    assert response.status == 303 and response.headers["Location"] == "/"
    header = set_cookie_header(response, SESSION_COOKIE)
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    assert {"httponly", "path", "samesite"} <= attributes
    assert "samesite=lax" in header.lower() and "path=/" in header.lower()
    assert ("secure" in attributes) is secure
    assert "max-age" not in attributes and "expires" not in attributes  # a browser-session cookie


async def test_session_is_stored_as_a_digest(client: TestClient, world: World, store: SQLiteStore) -> None:
    alice = await world.user("alice")
    await signed_in(client, alice)
    session_id = cookie(client, SESSION_COOKIE)
    assert session_id is not None and len(session_id) == 43
    record = await store.get_web_session(hashlib.sha256(session_id.encode()).digest())
    assert record is not None and record.user_id == alice.user.id
    assert record.expires_at - record.created_at == sessions.TTL
    raw = b"".join(p.read_bytes() for p in Path(store.path).parent.glob("store.db*"))
    assert session_id.encode() not in raw
    landing = await client.get("/")
    assert landing.status == 200 and "Signed in as <strong>alice</strong>" in await landing.text()


async def test_sign_out_ends_the_session_everywhere(client: TestClient, world: World) -> None:
    alice = await world.user("alice")
    await signed_in(client, alice)
    stolen = cookie(client, SESSION_COOKIE)
    refused = await post_form(client, "/-/logout", {}, token="x" * 43)
    assert refused.status == 403  # sign-out needs the CSRF token too
    assert (await client.get("/", allow_redirects=False)).status == 200
    out = await post_form(client, "/-/logout", {})
    assert out.status == 303 and out.headers["Location"] == "/-/login"
    assert cookie(client, SESSION_COOKIE) in (None, "")
    client.session.cookie_jar.update_cookies({SESSION_COOKIE: stolen or ""})
    replayed = await client.get("/", allow_redirects=False)
    assert replayed.status == 303 and replayed.headers["Location"].startswith("/-/login")


@pytest.mark.parametrize(
    ("change", "still_signed_in"),
    [
        ("nothing", True),
        ("just before expiry", True),
        ("expired", False),
        ("user blocked", False),
    ],
)
async def test_session_ends_at_expiry_or_block(
    client: TestClient, world: World, clock: FixedClock, store: SQLiteStore, change: str, still_signed_in: bool
) -> None:
    alice = await world.user("alice")
    await signed_in(client, alice)
    if change == "just before expiry":
        clock.advance(sessions.TTL - timedelta(seconds=1))
    elif change == "expired":
        clock.advance(sessions.TTL)
    elif change == "user blocked":
        await store.set_user_state(alice.user.id, "blocked")
    response = await client.get("/", allow_redirects=False)
    assert (response.status == 200) is still_signed_in
    if not still_signed_in:
        assert response.headers["Location"].startswith("/-/login")


async def test_signed_in_visitors_skip_the_sign_in_page(client: TestClient, world: World) -> None:
    await signed_in(client, await world.user("alice"))
    page = await client.get("/-/login?return_to=/elsewhere", allow_redirects=False)
    assert page.status == 303 and page.headers["Location"] == "/elsewhere"


async def test_sign_in_never_keeps_a_planted_session(client: TestClient, world: World, store: SQLiteStore) -> None:
    """Session fixation: whatever session cookie the browser carried, signing in issues a new id."""
    alice, mallory = await world.user("alice"), await world.user("mallory")
    await signed_in(client, mallory)
    planted = cookie(client, SESSION_COOKIE)
    assert planted is not None
    client.session.cookie_jar.clear()
    page = await client.get("/-/login")
    client.session.cookie_jar.update_cookies({SESSION_COOKIE: planted})
    response = await client.post(
        "/-/login",
        data={"authenticity_token": csrf_of(await page.text()), "username": "alice", "password": alice.password},
        allow_redirects=False,
    )
    assert response.status == 303
    issued = response.cookies[SESSION_COOKIE].value
    assert issued and issued != planted
    assert await store.get_web_session(sessions.digest(planted)) is None
    record = await store.get_web_session(sessions.digest(issued))
    assert record is not None and record.user_id == alice.user.id


@pytest.mark.parametrize(
    ("form", "why"),
    [
        ({"username": "alice"}, "no token"),
        ({"username": "alice", "authenticity_token": "A" * 43}, "token not the cookie's"),
    ],
)
async def test_sign_in_form_needs_its_csrf_token(
    client: TestClient, world: World, form: dict[str, str], why: str
) -> None:
    alice = await world.user("alice")
    await client.get("/-/login")  # sets the login CSRF cookie
    response = await client.post("/-/login", data=form | {"password": alice.password}, allow_redirects=False)
    assert response.status == 403, why
    assert "could not be verified" in await response.text()
    assert cookie(client, SESSION_COOKIE) is None
    # The refusal offers a fresh form that works.
    retry = await client.post(
        "/-/login",
        data={"authenticity_token": csrf_of(await response.text()), "username": "alice", "password": alice.password},
        allow_redirects=False,
    )
    assert retry.status == 303


@pytest.mark.parametrize(
    ("return_to", "location"),
    [
        ("/tanuki/app/-/settings/repository", "/tanuki/app/-/settings/repository"),
        ("/groups/tanuki/-/settings/repository?x=1", "/groups/tanuki/-/settings/repository?x=1"),
        ("//evil.example.com/", "/"),
        ("/\\evil.example.com", "/"),
        ("https://evil.example.com/", "/"),
        ("javascript:alert(1)", "/"),
        ("/-/login", "/"),
        ("", "/"),
    ],
)
async def test_return_to_stays_on_the_site(client: TestClient, world: World, return_to: str, location: str) -> None:
    alice = await world.user("alice")
    page = await client.get("/-/login", params={"return_to": return_to})
    response = await client.post(
        "/-/login",
        data={
            "authenticity_token": csrf_of(await page.text()),
            "username": "alice",
            "password": alice.password,
            "return_to": return_to,
        },
        allow_redirects=False,
    )
    assert response.status == 303 and response.headers["Location"] == location


async def test_anonymous_visitors_are_sent_to_sign_in_and_back(client: TestClient) -> None:
    response = await client.get("/tanuki/app/-/settings/repository", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/-/login?return_to=%2Ftanuki%2Fapp%2F-%2Fsettings%2Frepository"
    page = await client.get(response.headers["Location"])
    assert 'name="return_to" value="/tanuki/app/-/settings/repository"' in await page.text()


@pytest.mark.parametrize(
    ("password", "username"),
    [
        ("wrong-password", "alice"),
        ("whatever", "nobody"),  # an unknown user gets the very same answer
        ("", "alice"),
    ],
)
async def test_failed_sign_in_says_nothing_more(client: TestClient, world: World, password: str, username: str) -> None:
    await world.user("alice")
    page = await client.get("/-/login")
    response = await client.post(
        "/-/login",
        data={"authenticity_token": csrf_of(await page.text()), "username": username, "password": password},
        allow_redirects=False,
    )
    assert response.status == 422
    body = await response.text()
    assert "Invalid username or password." in body
    assert f'value="{username}"' in body  # the username is kept, the password never echoed
    assert 'name="password" autocomplete="current-password">' in body
    assert not password or password not in body
    assert cookie(client, SESSION_COOKIE) is None
    assert cookie(client, LOGIN_COOKIE)  # the same login CSRF token keeps working for the next try


def multipart_body(parts: list[tuple[str, str | None, bytes]], tail: bytes = b"--B--\r\n") -> bytes:
    out = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--B\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    return out + tail


@pytest.mark.parametrize(
    ("extra", "tail", "status"),
    [
        ([], b"--B--\r\n", 303),  # a multipart form of text fields signs in like an urlencoded one
        ([("avatar", "a.png", b"\x89PNG" * 1000)], b"--B--\r\n", 400),  # a file: no UI form has one
        ([("avatar", "a.png", b"x" * 100_000)], b"--B\r\nContent-Disposition: broken\r\n\r\nx\r\n--B--\r\n", 400),
        ([("avatar", "a.png", b"x" * 100_000)], b"", 400),  # cut short after a file part
        ([("note", None, b"\xff\xfe")], b"--B--\r\n", 400),  # not UTF-8
    ],
    ids=["text-fields", "file", "file-then-malformed", "file-then-cut", "not-utf8"],
)
async def test_multipart_sign_in_forms(
    client: TestClient, world: World, extra: list[tuple[str, str | None, bytes]], tail: bytes, status: int
) -> None:
    """A file part before a malformed one once left aiohttp's temporary file open (a ResourceWarning when collected,
    found by tests/fuzz): collected here, so the warning fails the test."""
    alice = await world.user("alice")
    page = await client.get("/-/login")
    fields = [("authenticity_token", None, csrf_of(await page.text()).encode())]
    fields += [("username", None, b"alice"), ("password", None, alice.password.encode()), *extra]
    response = await client.post(
        "/-/login",
        data=multipart_body(fields, tail),
        headers={"Content-Type": "multipart/form-data; boundary=B"},
        allow_redirects=False,
    )
    assert response.status == status, await response.text()
    assert (cookie(client, SESSION_COOKIE) is not None) == (status == 303)
    gc.collect()


async def test_blocked_user_cannot_sign_in(client: TestClient, world: World, store: SQLiteStore) -> None:
    alice = await world.user("alice")
    await store.set_user_state(alice.user.id, "blocked")
    response = await sign_in(client, alice)
    assert response.status == 422 and cookie(client, SESSION_COOKIE) is None


# --- the failed sign-in limits: per username (10 in 3 minutes, login_throttle.py) and the address ban every secret
# check shares (bruteforce.py; configured here as 10 failures → 3 minutes so that both cases read alike) ----------


async def attempt(client: TestClient, username: str, password: str, address: str) -> int:
    client.session.cookie_jar.clear()  # a fresh visitor each time: only the address and the username count
    page = await client.get("/-/login")
    response = await client.post(
        "/-/login",
        data={"authenticity_token": csrf_of(await page.text()), "username": username, "password": password},
        headers={"X-Forwarded-For": address},
        allow_redirects=False,
    )
    if response.status == 429:
        assert int(response.headers["Retry-After"]) > 0
        assert "Too many failed sign-in attempts" in await response.text()
    return response.status


@pytest.mark.parametrize("spread", ["one address, many usernames", "one username, many addresses"])
async def test_failed_sign_ins_are_limited(
    aiohttp_client: Any,
    aiohttp_server: Any,
    tmp_path: Path,
    store: SQLiteStore,
    clock: FixedClock,
    box: SecretBox,
    world: World,
    spread: str,
) -> None:
    # The test client connects from 127.0.0.1; as a trusted proxy it may name other client addresses.
    client = await make_client(
        aiohttp_client,
        aiohttp_server,
        tmp_path,
        store,
        clock,
        box,
        bruteforce={"max_failures": 10, "ban_time": 180},
        trusted_proxies=["127.0.0.1"],
    )
    alice = await world.user("alice")
    await world.user("bob")

    def who(i: int) -> tuple[str, str]:
        if spread == "one address, many usernames":
            return f"user{i}", "203.0.113.7"
        return "alice", f"203.0.113.{i + 1}"

    for i in range(10):
        username, address = who(i)
        assert await attempt(client, username, "wrong", address) == 422
    blocked_username, blocked_address = who(10)
    # Blocked even with the right password: the password is not even checked.
    right = alice.password if blocked_username == "alice" else "wrong"
    assert await attempt(client, blocked_username, right, blocked_address) == 429
    # Unrelated attempts go ahead: another user from another address.
    assert await attempt(client, "bob", "pw-bob-secret", "198.51.100.1") == 303
    # The window slides: three minutes after the first failures, attempts are judged again.
    clock.advance(timedelta(minutes=3))
    assert await attempt(client, "alice", alice.password, blocked_address) == 303


async def test_a_known_browser_is_not_locked_out_by_failures_on_its_users_name(
    behind_proxy: TestClient, world: World
) -> None:
    """Found by a review: ten wrong passwords on a name, from anywhere, kept its user out of the UI. A browser that
    signed in as that user before is let through (OWASP's device cookies); a fresh one is still refused."""
    client = behind_proxy
    alice, bob = await world.user("alice"), await world.user("bob")

    async def sign_in_keeping(device: str | None, username: str, password: str) -> int:
        client.session.cookie_jar.clear()
        if device is not None:
            client.session.cookie_jar.update_cookies({devices.COOKIE: device})
        page = await client.get("/-/login")
        form = {"authenticity_token": csrf_of(await page.text()), "username": username, "password": password}
        r = await client.post("/-/login", data=form, headers={"X-Forwarded-For": "198.51.100.2"}, allow_redirects=False)
        return r.status

    assert await sign_in_keeping(None, "alice", alice.password) == 303
    alices = cookie(client, devices.COOKIE)
    assert await sign_in_keeping(None, "bob", bob.password) == 303
    bobs = cookie(client, devices.COOKIE)
    assert alices and bobs and alices != bobs
    for i in range(10):  # a guesser on alice's name, from addresses of its own
        assert await attempt(client, "alice", "wrong", f"203.0.113.{i + 1}") == 422
    user_id, issued, mac = alices.split(".")
    year_old = f"{user_id}.{int(issued) - 366 * 86400}.{mac}"
    for device, status in [
        (None, 429),  # a fresh browser: the limit holds
        (bobs, 429),  # another user's device
        (f"{user_id}.{issued}.{'A' * len(mac)}", 429),  # forged
        (year_old, 429),  # too old (and its MAC no longer matches either)
        ("9" * 5000 + f".{issued}.{mac}", 429),  # a user id int() cannot read: refused, never a 500
        (alices, 303),  # alice's own browser
    ]:
        assert await sign_in_keeping(device, "alice", alice.password) == status, device[:40]
    # A device has a limit of its own: a stolen cookie gives no more guesses than a name (found by a review).
    for _ in range(10):
        assert await attempt(client, "alice", "wrong", "203.0.113.99") == 422  # the name locked again
    guesses = [await sign_in_keeping(alices, "alice", "wrong") for _ in range(12)]
    assert guesses == [422] * 10 + [429] * 2, guesses
