"""principals.identify: credentials x mode → who is asking, against a real store."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from multidict import CIMultiDict

from gateway import credentials
from gateway.principals import ANONYMOUS, DeployTokenPrincipal, Mode, UserPrincipal, identify
from tests.world import World


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


# Each case: (how to build headers from the fixtures, mode, expected: "deploy" | "user" | "anon" | None)
CASES = [
    ("deploy_exact", Mode.LOGIN, "deploy"),
    ("deploy_wrong_case_username", Mode.LOGIN, None),  # git and /jwt/auth: exact, case-sensitive
    ("deploy_other_username", Mode.LOGIN, None),
    ("deploy_other_username", Mode.PACKAGES, "deploy"),  # package endpoints ignore the username
    ("deploy_header", Mode.PACKAGES, "deploy"),
    ("deploy_bearer", Mode.PACKAGES, "deploy"),
    ("deploy_header", Mode.LOGIN, None),  # git/registry login is Basic only
    ("deploy_private_token", Mode.API, None),  # deploy tokens cannot use the REST API
    ("deploy_bearer", Mode.API, None),
    ("revoked", Mode.LOGIN, None),
    ("expired", Mode.LOGIN, None),
    ("pat_private_token", Mode.API, "user"),
    ("pat_bearer", Mode.API, "user"),
    ("pat_basic", Mode.LOGIN, "user"),
    ("pat_basic", Mode.API, None),
    ("password", Mode.LOGIN, "user"),
    ("password", Mode.PACKAGES, None),  # packages take tokens, never passwords
    ("wrong_password", Mode.LOGIN, None),
    ("unknown_user", Mode.LOGIN, None),
    ("blocked_pat", Mode.API, None),
    ("malformed", Mode.LOGIN, None),
    ("nothing", Mode.LOGIN, "anon"),
    ("nothing", Mode.API, "anon"),
]


@pytest.mark.parametrize(("case", "mode", "expected"), CASES)
async def test_identify(world: World, case: str, mode: Mode, expected: str | None) -> None:
    alice = await world.user("alice")
    bob = await world.user("bob")
    await world.store.set_user_state(bob.user.id, "blocked")
    group = await world.group("g")
    project = await world.project("p", group)
    token = await world.deploy_token(project, username="Deployer")
    revoked = await world.deploy_token(project)
    await world.store.revoke_deploy_token(revoked.token.id)
    expiring = await world.deploy_token(project, expires_at=world.clock.now() + timedelta(seconds=1))
    world.clock.advance(timedelta(seconds=1))  # now == expires_at: expired at the boundary
    headers = {
        "deploy_exact": basic("Deployer", token.secret),
        "deploy_wrong_case_username": basic("deployer", token.secret),
        "deploy_other_username": basic("anything", token.secret),
        "deploy_header": {"Deploy-Token": token.secret},
        "deploy_bearer": {"Authorization": f"Bearer {token.secret}"},
        "deploy_private_token": {"PRIVATE-TOKEN": token.secret},
        "revoked": basic(revoked.token.username, revoked.secret),
        "expired": basic(expiring.token.username, expiring.secret),
        "pat_private_token": {"PRIVATE-TOKEN": alice.pat},
        "pat_bearer": {"Authorization": f"Bearer {alice.pat}"},
        "pat_basic": basic("whoever", alice.pat),  # GitLab ignores the username for PATs (auth.rb)
        "password": basic("alice", alice.password),
        "wrong_password": basic("alice", alice.password + "x"),
        "unknown_user": basic("nobody", "whatever-password"),
        "blocked_pat": {"PRIVATE-TOKEN": bob.pat},
        "malformed": {"Authorization": "Basic %%%"},
        "nothing": {},
    }[case]
    creds = credentials.from_headers(CIMultiDict(headers))
    principal = await identify(world.store, world.hasher, creds, world.clock.now(), mode)
    got = {DeployTokenPrincipal: "deploy", UserPrincipal: "user"}.get(type(principal))
    if principal == ANONYMOUS:
        got = "anon"
    assert got == expected
    if isinstance(principal, UserPrincipal):
        assert principal.user.id == alice.user.id
        assert (principal.scopes is None) is (case == "password")
    if isinstance(principal, DeployTokenPrincipal):
        assert principal.token.id == token.token.id
