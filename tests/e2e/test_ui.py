"""The web UI in a real headless Chromium (Debian's, driven by Playwright; never `playwright install`): sign-in,
deploy tokens created and revoked through Settings → Repository, the token used by a real `git clone` through
the gateway, and the refusals (roles, CSRF, XSS). Screenshots of the main pages go to artifacts/screenshots/."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Dialog, Page, async_playwright

from gateway import repositories, secretbox
from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.config import Config
from gateway.store.base import Namespace, Project
from gateway.store.sqlite import SQLiteStore
from gateway.users import AccessLevel, PasswordHasher
from tests.conftest import FAST_KDF, make_config
from tests.gitcli import agit, git_env, helper_args, make_seed, push_direct
from tests.servers import ROOT, require
from tests.world import Actor, World

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHROMIUM = "/usr/bin/chromium"
# shared/notes/browser-and-postgres.md §1: root needs --no-sandbox; the rest keep Chromium off the network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
XSS_NAME = '<img src=x onerror="window.__xss=1;alert(1)"><script>window.__xss=2</script>'


@dataclass
class Site:
    url: str
    config: Config
    store: SQLiteStore
    env: dict[str, str]  # git's environment (isolated HOME)
    owner: Actor  # Owner of group tanuki
    maintainer: Actor  # Maintainer of group tanuki (so of its projects too)
    developer: Actor  # Developer of group tanuki
    group: Namespace
    project: Project
    seed_head: str

    def at(self, path: str) -> str:
        return self.url + path

    async def active_tokens(self) -> int:
        now = datetime.now(UTC)
        page = await self.store.list_deploy_tokens(project_id=self.project.id, active_at=now)
        group_page = await self.store.list_deploy_tokens(group_id=self.group.id, active_at=now)
        return page.total + group_page.total


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    """The gateway in process (create_app + AppRunner + TCPSite on 127.0.0.1:0) with a world and a seeded repo."""
    base = tmp_path_factory.mktemp("ui")
    config = make_config(base)
    store = await SQLiteStore(base / "gateway.db").open()
    await store.migrate()
    clock = FixedClock(datetime.now(UTC))
    box = secretbox.SecretBox(os.urandom(32))
    world = World(store, clock, box, PasswordHasher(FAST_KDF["password_memory_kib"], 1), config)
    owner, maintainer, developer = await world.user("olivia"), await world.user("maya"), await world.user("dave")
    group = await world.group("tanuki")
    project = await world.project("app", group)
    await world.member(owner, group, AccessLevel.OWNER)
    await world.member(maintainer, group, AccessLevel.MAINTAINER)
    await world.member(developer, group, AccessLevel.DEVELOPER)

    env = git_env(base / "home")
    seed_head = make_seed(env, base / "seed")
    bare = repositories.locate(config, project.full_path)
    assert bare is not None
    push_direct(env, base / "seed", bare)

    runner = web.AppRunner(create_app(config, store=store, clock=clock, box=box), auto_decompress=False)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    host, port = runner.addresses[0][:2]
    try:
        yield Site(f"http://{host}:{port}", config, store, env, owner, maintainer, developer, group, project, seed_head)
    finally:
        await runner.cleanup()
        await store.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    require(CHROMIUM, "chromium")
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def new_context(browser: Browser, site: Site, **options: Any) -> BrowserContext:
    ctx = await browser.new_context(viewport={"width": 1200, "height": 900}, **options)
    ctx.set_default_timeout(5000)  # local pages answer in milliseconds; fail fast rather than after 30 s
    await ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    return ctx


@pytest_asyncio.fixture(loop_scope="module")
async def context(browser: Browser, site: Site) -> AsyncIterator[BrowserContext]:
    ctx = await new_context(browser, site)
    try:
        yield ctx
    finally:
        await ctx.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def owner_session(browser: Browser, site: Site) -> dict[str, Any]:
    """The group Owner signed in once for the module (cookies of a real sign-in, reused by each test)."""
    ctx = await new_context(browser, site)
    page = await ctx.new_page()
    await sign_in(page, site, site.owner)
    state = await ctx.storage_state()
    await ctx.close()
    return dict(state)


@pytest_asyncio.fixture(loop_scope="module")
async def owner(browser: Browser, site: Site, owner_session: dict[str, Any]) -> AsyncIterator[Page]:
    """A page of the signed-in group Owner, on the project's repository settings."""
    ctx = await new_context(browser, site, storage_state=owner_session)
    try:
        page = await ctx.new_page()
        await page.goto(site.at("/tanuki/app/-/settings/repository"))
        yield page
    finally:
        await ctx.close()


async def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def sign_in(page: Page, site: Site, actor: Actor, path: str = "/") -> None:
    await page.goto(site.at(path))
    await page.fill("#user_login", actor.user.username)
    await page.fill("#user_password", actor.password)
    await page.click("#sign-in")
    await page.wait_for_load_state()
    assert await page.locator("#sign-out").count() == 1, await page.content()


async def create_token(
    page: Page, *, name: str, scopes: tuple[str, ...] = ("read_repository",), username: str = "", expires: str = ""
) -> None:
    await page.fill("#deploy_token_name", name)
    await page.fill("#deploy_token_username", username)
    await page.fill("#deploy_token_expires_at", expires)
    for scope in scopes:
        await page.check(f"#deploy_token_{scope}")
    await page.click("#create-deploy-token")
    await page.wait_for_load_state()


async def clone(site: Site, path: str, username: str, secret: str, dest: Path) -> tuple[int, str]:
    result = await agit(site.env, *helper_args(username, secret), "clone", "-q", f"{site.url}/{path}.git", str(dest))
    return result.code, result.err


def dialogs(page: Page) -> list[str]:
    seen: list[str] = []

    async def on_dialog(dialog: Dialog) -> None:
        seen.append(dialog.message)
        await dialog.accept()

    page.on("dialog", on_dialog)
    return seen


async def test_sign_in(context: BrowserContext, site: Site) -> None:
    page = await context.new_page()
    response = await page.goto(site.at("/tanuki/app/-/settings/repository"))
    assert response is not None and page.url.startswith(site.at("/-/login"))
    await shot(page, "01-login")

    await page.fill("#user_login", site.owner.user.username)
    await page.fill("#user_password", "not-the-password")
    await page.click("#sign-in")
    assert "Invalid username or password." in await page.locator(".alert-danger").inner_text()
    assert await page.input_value("#user_login") == site.owner.user.username
    assert await page.input_value("#user_password") == ""

    await page.fill("#user_password", site.owner.password)
    await page.click("#sign-in")
    await page.wait_for_url(site.at("/tanuki/app/-/settings/repository"))  # back where the visitor wanted to go
    cookie = next(c for c in await context.cookies() if c["name"] == "_gateway_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax" and cookie["secure"] is False
    assert await page.evaluate("document.cookie") == ""  # invisible to scripts

    await page.goto(site.url)
    assert await page.locator("#projects a", has_text="tanuki/app").count() == 1
    assert await page.locator("#groups a", has_text="tanuki").count() == 1
    await shot(page, "02-landing")

    await page.click("#sign-out")
    await page.wait_for_url(site.at("/-/login"))
    await page.goto(site.url)
    assert page.url.startswith(site.at("/-/login"))


async def test_project_token_shown_once_cloned_and_revoked(
    owner: Page, site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    page = owner
    seen = dialogs(page)
    await page.goto(site.url)
    await page.click("#projects a")
    settings = site.at("/tanuki/app/-/settings/repository")
    assert page.url == settings
    await shot(page, "03-project-settings")

    expires = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    await create_token(page, name="CI clone", expires=expires)
    panel = page.locator("#new-token")
    assert await panel.is_visible()
    username = await page.input_value("#deploy-token-user")
    secret = await page.input_value("#deploy-token-value")
    assert username.startswith("gitlab+deploy-token-") and secret.startswith("gldt-") and len(secret) == 25
    assert "won't be shown again" in await panel.inner_text()
    assert page.url == settings  # the script replaced the POST's history entry; the secret is in no URL
    await shot(page, "04-token-created")

    await page.click("button[data-copy=deploy-token-value]")
    await page.wait_for_selector("button[data-copy=deploy-token-value].copied")
    assert await page.evaluate("navigator.clipboard.readText()") == secret

    row = page.locator("#active-deploy-tokens tr", has_text="CI clone")
    assert await row.locator(".token-username").inner_text() == username
    assert expires in await row.inner_text()

    await page.reload()
    assert await page.locator("#new-token").count() == 0
    assert secret not in await page.content()
    assert await page.locator("#active-deploy-tokens tr", has_text="CI clone").count() == 1

    code, err = await clone(site, "tanuki/app", username, secret, tmp_path / "clone")
    assert code == 0, err
    head = await agit(site.env, "rev-parse", "HEAD", cwd=tmp_path / "clone")
    assert head.out.strip() == site.seed_head

    await page.locator("#active-deploy-tokens tr", has_text="CI clone").get_by_role("button", name="Revoke").click()
    await page.wait_for_url(f"{settings}?revoked=*")
    assert seen and "CI clone" in seen[0]  # the confirm() dialog, accepted
    assert "has been revoked" in await page.locator(".alert-success").inner_text()
    assert await page.locator("#active-deploy-tokens tr", has_text="CI clone").count() == 0

    code, err = await clone(site, "tanuki/app", username, secret, tmp_path / "after-revoke")
    assert code != 0 and "Access denied" in err, err
    assert secret not in caplog.text


async def test_group_token_clones_group_projects(owner: Page, site: Site, tmp_path: Path) -> None:
    page = owner
    await page.goto(site.url)
    await page.click("#groups a")
    assert page.url == site.at("/groups/tanuki/-/settings/repository")
    await create_token(
        page, name="Group deployer", username="group-deployer", scopes=("read_repository", "read_registry")
    )
    assert await page.input_value("#deploy-token-user") == "group-deployer"
    secret = await page.input_value("#deploy-token-value")
    await shot(page, "05-group-settings")
    row = page.locator("#active-deploy-tokens tr", has_text="Group deployer")
    assert await row.locator(".token-scopes").inner_text() == "read_repository read_registry"

    code, err = await clone(site, "tanuki/app", "group-deployer", secret, tmp_path / "clone")
    assert code == 0, err


async def test_validation_errors_next_to_fields(owner: Page, site: Site) -> None:
    page = owner
    before = await site.active_tokens()
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    await create_token(page, name="x" * 256, username="bad user!", expires=yesterday, scopes=())
    errors = {
        "name": "Name is too long (maximum is 255 characters)",
        "username": "Username can contain only letters, digits",
        "expires_at": "Expiration date must be in the future",
        "scopes": "Scopes can't be blank",
    }
    for field, message in errors.items():
        error = page.locator(f"#deploy_token_{field}_error")
        assert message in await error.inner_text()
    for field in ("name", "username", "expires_at"):
        assert await page.get_attribute(f"#deploy_token_{field}", "aria-invalid") == "true"
    assert await page.input_value("#deploy_token_username") == "bad user!"  # kept for correction
    assert await page.locator("#new-token").count() == 0
    assert await site.active_tokens() == before
    await shot(page, "06-validation-errors")


async def test_roles(browser: Browser, site: Site) -> None:
    developer = await new_context(browser, site)
    page = await developer.new_page()
    await sign_in(page, site, site.developer)
    assert await page.locator("#projects a").count() == 0 and await page.locator("#groups a").count() == 0
    for path in ("/tanuki/app/-/settings/repository", "/groups/tanuki/-/settings/repository"):
        response = await page.goto(site.at(path))
        assert response is not None and response.status == 404
        assert await page.locator("form#new-deploy-token").count() == 0
    await shot(page, "08-developer-404")
    await developer.close()

    maintainer = await new_context(browser, site)
    page = await maintainer.new_page()
    await sign_in(page, site, site.maintainer, "/groups/tanuki/-/settings/repository")
    assert await page.locator("#deploy-tokens").is_visible()
    assert await page.locator("form#new-deploy-token").count() == 0  # group Maintainer: sees, Owner creates
    assert await page.get_by_role("button", name="Revoke").count() == 0
    await shot(page, "07-group-maintainer")
    await page.goto(site.at("/tanuki/app/-/settings/repository"))
    assert await page.locator("form#new-deploy-token").count() == 1  # project Maintainer (inherited): manages
    await maintainer.close()


async def test_csrf_refused(owner: Page, site: Site) -> None:
    page = owner
    before = await site.active_tokens()
    await page.locator("#new-deploy-token input[name=authenticity_token]").evaluate("e => e.value = 'forged'")
    async with page.expect_response(lambda r: r.request.method == "POST") as posted:
        await create_token(page, name="forged")
    assert (await posted.value).status == 403
    assert "could not be verified" in await page.content()
    assert await site.active_tokens() == before

    # A page on another site (localhost vs 127.0.0.1) posting a complete form: the Lax cookie is not sent.
    attacker = web.Application()
    target = site.at("/tanuki/app/-/settings/repository/deploy_token/create")
    html = (
        f'<form id="f" method="post" action="{target}"><input name="name" value="csrf">'
        '<input name="scopes" value="read_repository"><input name="authenticity_token" value="guess"></form>'
        '<script>document.getElementById("f").submit()</script>'
    )

    async def evil(_: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    attacker.router.add_get("/", evil)
    runner = web.AppRunner(attacker)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        evil_page = await page.context.new_page()
        async with evil_page.expect_response(target) as posted:
            await evil_page.goto(f"http://localhost:{runner.addresses[0][1]}/")
        response = await posted.value
        # Without its session the POST is an anonymous one: sent to sign in, nothing created.
        assert response.status == 303 and response.headers["location"].startswith("/-/login")
        await evil_page.wait_for_load_state()
        assert await evil_page.locator("#new-token").count() == 0
    finally:
        await runner.cleanup()
    assert await site.active_tokens() == before


async def test_xss_in_token_name_is_text(owner: Page, site: Site) -> None:
    page = owner
    seen = dialogs(page)
    await create_token(page, name=XSS_NAME)
    await page.reload()
    cell = page.locator("td.token-name", has_text="onerror")
    assert await page.locator("#active-deploy-tokens").locator(cell).inner_text() == XSS_NAME
    assert await page.locator("#active-deploy-tokens img").count() == 0
    assert await page.locator("#active-deploy-tokens script").count() == 0
    assert await page.evaluate("window.__xss") is None
    assert seen == []
    # The confirmation carries the name as text too: the dialog shows it literally, and nothing else runs.
    row = page.locator("#active-deploy-tokens tr", has=cell)
    await row.get_by_role("button", name="Revoke").click()
    await page.wait_for_url("**?revoked=*")
    assert len(seen) == 1 and XSS_NAME in seen[0]
    assert await page.evaluate("window.__xss") is None


async def test_works_without_javascript(browser: Browser, site: Site) -> None:
    ctx = await new_context(browser, site, java_script_enabled=False)
    page = await ctx.new_page()
    await sign_in(page, site, site.owner, "/tanuki/app/-/settings/repository")
    await create_token(page, name="no-js")
    assert await page.locator("#new-token").is_visible()
    assert not await page.locator("button[data-copy]").first.is_visible()  # the copy buttons need the script
    row = page.locator("#active-deploy-tokens tr", has_text="no-js")
    await row.get_by_role("button", name="Revoke").click()
    await page.wait_for_load_state()
    assert await page.locator("#confirm-revoke").is_visible()  # the server's confirmation page
    await shot(page, "09-revoke-confirmation")
    await page.click("#confirm-revoke")
    await page.wait_for_load_state()
    assert "has been revoked" in await page.locator(".alert-success").inner_text()
    assert await page.locator("#active-deploy-tokens tr", has_text="no-js").count() == 0
    await ctx.close()
