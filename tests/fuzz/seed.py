"""What every HTTP fuzz test shares: reproducible hypothesis settings, a seeded world (users, groups, projects,
deploy tokens with known secrets) and the credentials each principal can present."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings

from gateway import tokens
from gateway.store.base import Namespace, Project
from gateway.users import AccessLevel
from tests.world import Actor, World

# No example database and a fixed seed: a CI run tests exactly what the last local run tested. The fixtures (one
# app and one seeded store per test function) are shared by the examples on purpose: building them per example
# would cost more than the requests themselves. A longer hunt (README "Tests"): FUZZ_SCALE=10 gives every test ten
# times its examples, FUZZ_RANDOM=1 new ones each run (a failure prints the example that reproduces it); such runs
# found a temporary file left open and an oracle mistake that the fixed examples never met.
SCALE = int(os.environ.get("FUZZ_SCALE") or 1)
if SCALE < 1:
    raise ValueError(f"FUZZ_SCALE must be a whole number of at least 1, got {SCALE}")
FUZZ = settings(
    database=None,
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def examples(count: int) -> int:
    """A test's number of examples, times FUZZ_SCALE."""
    return count * SCALE


def basic(username: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{username}:{password}".encode())


@dataclass(frozen=True)
class Cred:
    """A way of presenting a principal's secret. `who` names the principal (Seed.users / Seed.deploy_tokens), with
    "+pw" when a user's password is sent (the user's full rights, whatever their PAT's scopes) and "?" when a deploy
    token is sent with another Basic username (git and /jwt/auth refuse it; package endpoints ignore the name)."""

    who: str
    headers: tuple[tuple[bytes, bytes], ...]

    def __repr__(self) -> str:  # hypothesis prints failing examples: keep them readable
        return f"Cred({self.who}: {', '.join(k.decode() for k, _ in self.headers) or 'none'})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def split_who(who: str) -> tuple[str, str]:
    """("dev", "pw") for a password, ("dt_project", "wrong-name") for a token under another Basic name."""
    if who.endswith("+pw"):
        return who[:-3], "pw"
    if who.endswith("?"):
        return who[:-1], "wrong-name"
    return who, ""


@dataclass(frozen=True)
class Seed:
    """g (private) → sub (private) → proj; pubg (public) → pub; outsider's personal project `mine`."""

    users: dict[str, Actor]
    group: Namespace
    sub: Namespace
    public_group: Namespace
    project: Project
    public_project: Project
    personal: Project
    deploy_tokens: dict[str, tokens.Created]

    def __repr__(self) -> str:  # hypothesis prints its test's arguments: the seed is always the same one
        return "Seed(...)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # what hypothesis's pretty-printer asks for
        printer.text(repr(self))

    @property
    def secrets(self) -> list[bytes]:
        """Every secret a request of these tests may carry, and how it looks inside a Basic header."""
        out: list[str] = []
        for actor in self.users.values():
            out += [actor.pat, actor.password]
        out += [created.secret for created in self.deploy_tokens.values()]
        encoded = [basic(a.user.username, a.pat)[6:].decode() for a in self.users.values()]
        return [s.encode() for s in out + encoded]

    def credentials(self) -> list[Cred]:
        creds = [Cred("anonymous", ())]
        for who, actor in self.users.items():
            name = actor.user.username
            creds += [
                Cred(who, ((b"PRIVATE-TOKEN", actor.pat.encode()),)),
                Cred(who, ((b"Authorization", b"Bearer " + actor.pat.encode()),)),
                Cred(who, ((b"Authorization", basic(name, actor.pat)),)),
                Cred(f"{who}+pw", ((b"Authorization", basic(name, actor.password)),)),
            ]
        for who, created in self.deploy_tokens.items():
            secret = created.secret
            creds += [
                Cred(who, ((b"Authorization", basic(created.token.username, secret)),)),
                Cred(who, ((b"Deploy-Token", secret.encode()),)),
                Cred(who, ((b"Authorization", b"Bearer " + secret.encode()),)),
                Cred(f"{who}?", ((b"Authorization", basic("someone-else", secret)),)),
            ]
        return creds

    @property
    def full_paths(self) -> list[str]:
        return [self.project.full_path, self.public_project.full_path, self.personal.full_path]


# Who may touch the private project (g/sub/proj) at all, and who may push to it: the seed's memberships and tokens.
PRIVATE_READERS = frozenset({"admin", "owner", "dev", "dt_project", "dt_group"})
PRIVATE_WRITERS = frozenset({"admin", "owner", "dev"})
DEPLOY_TOKENS = frozenset({"dt_project", "dt_group", "dt_packages"})


async def build(world: World) -> Seed:
    users = {
        "admin": await world.user("root", admin=True),
        "owner": await world.user("owner"),
        "dev": await world.user("dev"),
        "outsider": await world.user("outsider"),
        "reader": await world.user("reader", scopes=("read_api",)),
        "blocked": await world.user("blocked"),
    }
    group = await world.group("g")
    sub = await world.group("sub", group)
    public_group = await world.group("pubg", visibility="public")
    project = await world.project("proj", sub)
    public_project = await world.project("pub", public_group, visibility="public")
    home = await world.store.get_namespace(users["outsider"].user.namespace_id)
    assert home is not None
    personal = await world.project("mine", home)
    await world.member(users["owner"], group, AccessLevel.OWNER)
    await world.member(users["dev"], sub, AccessLevel.DEVELOPER)
    await world.member(users["reader"], group, AccessLevel.OWNER)  # an Owner whose PAT can only read the API
    await world.member(users["blocked"], group, AccessLevel.OWNER)
    await world.store.set_user_state(users["blocked"].user.id, "blocked")
    deploy_tokens = {
        "dt_project": await world.deploy_token(project, tokens.SCOPES, name="all"),
        "dt_group": await world.deploy_token(group, ("read_repository", "read_registry"), name="group"),
        "dt_packages": await world.deploy_token(
            project, ("read_package_registry", "write_package_registry"), name="packages"
        ),
    }
    return Seed(users, group, sub, public_group, project, public_project, personal, deploy_tokens)
