"""Registry scope strings (distribution docs/spec/auth/scope.md) as properties: parsing never raises but the
documented BadRequest for too many scopes, well-formed scopes survive a round trip, and grant() gives exactly the
requested pull/push/delete actions that policy allows, never `*` to a repository, the catalog to administrators only."""

from __future__ import annotations

import re

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gateway import access
from gateway.errors import BadRequest
from gateway.policy import Allowed, Operation, Target
from gateway.principals import ANONYMOUS, DeployTokenPrincipal, Principal, UserPrincipal
from gateway.registry_auth import MAX_SCOPES, Scope, grant, parse_scope, parse_scopes
from gateway.store.sqlite import SQLiteStore
from tests.fuzz.seed import FUZZ, Seed, build, examples
from tests.world import World

# Characters that matter to the grammar, and then anything.
GRAMMAR = ":,()*/ \t\n" + "repositoryegcatlg" + "pushdeletPULL" + "0123456789.-_"
items = st.one_of(st.text(GRAMMAR, max_size=40), st.text(max_size=40))
TYPE_RE = re.compile(r"\A[a-z0-9]+\Z")
ACTION_RE = re.compile(r"\A[a-z*]+\Z")


def well_formed(scope: Scope) -> None:
    assert TYPE_RE.match(scope.type) and (not scope.klass or TYPE_RE.match(scope.klass)), scope
    assert 0 < len(scope.name) <= 512, scope
    assert scope.actions and len(set(scope.actions)) == len(scope.actions), scope
    assert all(ACTION_RE.match(a) for a in scope.actions), scope


@given(item=items)
@settings(FUZZ, max_examples=examples(600))
def test_parse_scope_never_raises(item: str) -> None:
    scope = parse_scope(item)
    if scope is not None:
        well_formed(scope)
        # Nothing is invented: every part comes from the item.
        assert item.startswith(scope.type) and scope.name in item
        assert all(a in item.rsplit(":", 1)[1].split(",") for a in scope.actions)


token = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
names = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=60)
actions = st.lists(st.sampled_from(("pull", "push", "delete", "*", "x")) | st.text("abz*", min_size=1), min_size=1)


@given(kind=token, klass=st.one_of(st.just(""), token), name=names, wanted=actions)
@settings(FUZZ, max_examples=examples(300))
def test_round_trip(kind: str, klass: str, name: str, wanted: list[str]) -> None:
    """`type[(class)]:name:actions` parses back to its parts; names may hold ':' (host:port) and '/'."""
    deduplicated = tuple(dict.fromkeys(wanted))
    text = f"{kind}{f'({klass})' if klass else ''}:{name}:{','.join(wanted)}"
    expected = Scope(kind, name, deduplicated, klass) if len(name) <= 512 else None
    assert parse_scope(text) == expected


@given(values=st.lists(st.lists(items, max_size=30).map(" ".join), max_size=4))
@settings(FUZZ, max_examples=examples(300))
def test_parse_scopes_merges_or_refuses_too_many(values: list[str]) -> None:
    parsed_items = [s for s in (parse_scope(i) for v in values for i in v.split()) if s is not None]
    keys = list(dict.fromkeys((s.type, s.klass, s.name) for s in parsed_items))
    try:
        merged = parse_scopes(values)
    except BadRequest:
        assert len(keys) > MAX_SCOPES  # the one documented refusal
        return
    assert [(s.type, s.klass, s.name) for s in merged] == keys
    for scope in merged:
        well_formed(scope)
        asked = [
            a
            for s in parsed_items
            if (s.type, s.klass, s.name) == (scope.type, scope.klass, scope.name)
            for a in s.actions
        ]
        assert scope.actions == tuple(dict.fromkeys(asked))


# --- grant against a real store ----------------------------------------------------------------------------------

# The distribution reference grammar for repository names (docs/spec/api.md "path-component"), lower case.
COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_NAME = re.compile(rf"\A{COMPONENT}(?:/{COMPONENT})*\Z")


@pytest.fixture
async def seeded(world: World) -> Seed:
    return await build(world)


def principals(seed: Seed) -> st.SearchStrategy[Principal]:
    scopes = st.one_of(
        st.none(),
        st.frozensets(st.sampled_from(("api", "read_api", "read_repository", "read_registry", "write_registry"))),
    )
    people = st.builds(
        lambda actor, s: UserPrincipal(actor.user, s, "password" if s is None else "pat"),
        st.sampled_from(list(seed.users.values())),
        scopes,
    )
    tokens = st.sampled_from([DeployTokenPrincipal(c.token) for c in seed.deploy_tokens.values()])
    weighted: tuple[st.SearchStrategy[Principal], ...] = (people, people, tokens, tokens, st.just(ANONYMOUS))
    return st.sampled_from(weighted).flatmap(lambda s: s)


def requested(seed: Seed) -> st.SearchStrategy[list[Scope]]:
    # Mostly names of the seeded projects' images (so that grants happen), then groups, odd suffixes, anything.
    image = st.sampled_from(("", "/img", "/a/b", "/Img", "/x_y/z-1"))
    odd = st.sampled_from(("/a/b/c", "/../x", ":tag", "//x", "/-x", "/x."))
    name = st.tuples(
        st.sampled_from(seed.full_paths) | st.sampled_from((seed.group.full_path, seed.sub.full_path)),
        image | image | odd,
        st.integers(0, 3),
    ).map(lambda t: (t[0] + t[1]).upper() if t[2] == 0 else t[0] + t[1])
    kind = st.sampled_from(("repository",) * 6 + ("registry", "image"))
    klass = st.sampled_from(("",) * 6 + ("plugin",))
    wanted = st.lists(st.sampled_from(("pull", "push", "delete", "*", "x")), min_size=1, max_size=4, unique=True)
    images = st.builds(lambda n, a: Scope("repository", n, tuple(a)), name, wanted)
    scope = st.builds(lambda k, c, n, a: Scope(k, n, tuple(a), c), kind, klass, st.one_of(name, names), wanted)
    catalog = st.builds(lambda a: Scope("registry", "catalog", tuple(a)), wanted)
    return st.lists(st.sampled_from((images, images, images, scope, catalog)).flatmap(lambda s: s), max_size=6)


def resolve(seed: Seed, name: str) -> tuple[str, Target] | None:
    """The project an image name belongs to (gitlab-behaviour.md §6): the name, minus one, minus two segments."""
    lowered = name.lower()
    if not REPOSITORY_NAME.match(lowered) or not 2 <= lowered.count("/") + 1 < 20:
        return None
    parts = lowered.split("/")
    projects = {p.full_path: p for p in (seed.project, seed.public_project, seed.personal)}
    for drop in range(3):
        candidate = "/".join(parts[: len(parts) - drop])
        if len(parts) - drop >= 2 and candidate in projects:
            return candidate, Target.of_project(projects[candidate])
    return None


OPERATIONS = {"pull": Operation.REGISTRY_PULL, "push": Operation.REGISTRY_PUSH, "delete": Operation.REGISTRY_DELETE}


@given(data=st.data())
@settings(FUZZ, max_examples=examples(200))
async def test_grant_gives_what_policy_allows(store: SQLiteStore, seeded: Seed, data: st.DataObject) -> None:
    principal = data.draw(principals(seeded), "principal")
    scopes = data.draw(requested(seeded), "scopes")
    granted = await grant(store, principal, scopes)
    catalog_allowed = (
        isinstance(principal, UserPrincipal)
        and principal.user.is_admin
        and (principal.scopes is None or bool(principal.scopes & {"api", "read_registry"}))
    )
    want_catalog = any(
        s.type == "registry" and not s.klass and s.name == "catalog" and "*" in s.actions for s in scopes
    )
    expected: dict[str, set[str]] = {}  # lower-cased name → actions policy allows among those asked
    for scope in scopes:
        if scope.type != "repository" or scope.klass:
            continue
        resolved = resolve(seeded, scope.name)
        if resolved is None:
            continue
        for action in scope.actions:
            op = OPERATIONS.get(action)
            if op is not None and isinstance(await access.authorize(store, principal, resolved[1], op), Allowed):
                expected.setdefault(scope.name.lower(), set()).add(action)
    got: dict[str, set[str]] = {}
    for item in granted:
        if item.type == "registry":
            assert (item.name, item.actions) == ("catalog", ("*",)), item
            assert catalog_allowed, f"{principal} got the catalog"
            continue
        assert item.type == "repository", item
        assert "*" not in item.actions and set(item.actions) <= {"pull", "push", "delete"}, item
        got.setdefault(item.name, set()).update(item.actions)
        if isinstance(principal, DeployTokenPrincipal):
            assert "delete" not in item.actions, item
    event("granted " + ("nothing" if not granted else "catalog" if want_catalog and catalog_allowed else "actions"))
    assert got == expected
    assert any(a.type == "registry" for a in granted) == (want_catalog and catalog_allowed)
