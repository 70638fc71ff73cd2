"""Hostile HTTP against the whole gateway in process, over a raw socket: every route of THE route table with fuzzed
parameters, queries, bodies and credentials; Authorization values of every kind; request targets with traversal
tricks; API bodies as an administrator; /jwt/auth scopes; package uploads; UI forms with a session.

Each exchange is checked by oracle.check: no 500 (a 503 for /v2/ without a registry, a 502 for package formats whose
backend refuses connections), no unhandled exception logged, no secret echoed or logged, no other principal than
the credentials' own, and no success beyond what the seeded memberships and tokens allow.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import jwt
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gateway.routes import ROUTES, Route
from gateway.signing_keys import SigningKey
from gateway.store.base import Store
from gateway.web import csrf, sessions
from tests.conftest import T0
from tests.fuzz import oracle
from tests.fuzz.rawhttp import send
from tests.fuzz.seed import DEPLOY_TOKENS, FUZZ, Cred, Seed, basic, examples, split_who
from tests.fuzz.strategies import (
    BOUNDARIES,
    MARKER,
    Target,
    any_credential,
    api_body,
    body,
    credential,
    extra_headers,
    fuzz_path,
    header_value,
    junk_credential,
    multipart,
    query_pairs,
    route_target,
)


@pytest.fixture
def logs() -> Iterator[oracle.Logs]:
    with oracle.captured() as captured:
        yield captured


async def exchange(
    port: int,
    seed: Seed,
    logs: oracle.Logs,
    cred: Cred,
    target: Target,
    payload: tuple[bytes, bytes | None] = (b"", None),
    extra: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...] = (),
    secrets: list[bytes] | None = None,
    session: str | None = None,
) -> tuple[int, dict[str, object] | None, bytes]:
    data, ctype = payload
    headers = [*cred.headers, *extra]
    if ctype is not None:
        headers.append((b"Content-Type", ctype))
    logs.reset()
    reply = await send(port, target.method, target.raw, headers, data)
    entry = oracle.check(seed, logs, cred.who, target, reply, secrets=secrets, session=session)
    # --hypothesis-show-statistics shows what the examples reached: route families and statuses.
    event(f"{str(entry['route']).split('.')[0] if entry else 'parser'} {reply.status}")
    return reply.status, entry, reply.body


# --- every route ----------------------------------------------------------------------------------------------


@given(data=st.data())
@settings(FUZZ, max_examples=examples(300))
async def test_every_route(port: int, seed: Seed, logs: oracle.Logs, data: st.DataObject) -> None:
    """Any route of the table, its parameters, query, body, headers and credentials fuzzed."""
    target = data.draw(route_target(seed), "target")
    cred = data.draw(credential(seed), "credential")
    payload = (
        data.draw(body(), "body") if target.method not in (b"GET", b"HEAD") or data.draw(st.booleans()) else (b"", None)
    )
    await exchange(port, seed, logs, cred, target, payload, data.draw(extra_headers, "headers"))


# --- git -----------------------------------------------------------------------------------------------------------

GIT_ROUTES = tuple(r for r in ROUTES if r.name.startswith("git."))
GIT_HEADERS = (
    (b"Git-Protocol", b"version=2"),
    (b"Git-Protocol", b"version=2:object-format=sha256"),
    (b"Git-Protocol", b"../../etc"),
    (b"Content-Encoding", b"gzip"),
    (b"Content-Encoding", b"deflate"),
    (b"Content-Type", b"application/x-git-upload-pack-request"),
)


@given(data=st.data())
@settings(FUZZ, max_examples=examples(150))
async def test_git_requests(port: int, seed: Seed, logs: oracle.Logs, data: st.DataObject) -> None:
    """Every credential against the seeded repositories' smart-HTTP endpoints, with bodies git would never send:
    only the seeded readers clone and only its writers push (oracle.MAY), whatever the body."""
    route = data.draw(st.sampled_from(GIT_ROUTES), "route")
    repo = data.draw(st.sampled_from([p + suffix for p in seed.full_paths for suffix in ("", ".git", ".GIT")]), "repo")
    path = route.path.replace("/{repo:.+}", "/" + repo)
    query = ""
    if route.name == "git.info_refs":
        query = data.draw(st.sampled_from(("service=git-upload-pack", "service=git-receive-pack", "", "service=x")))
    target = Target(route, route.method.encode(), path, query, {"repo": repo})
    payload = data.draw(body(), "body") if route.method == "POST" else (b"", None)
    extra = data.draw(st.lists(st.sampled_from(GIT_HEADERS), max_size=2), "headers")
    await exchange(port, seed, logs, data.draw(any_credential(seed), "credential"), target, payload, extra)


# --- Authorization values -------------------------------------------------------------------------------------


def protected(seed: Seed) -> list[tuple[str, str, str]]:
    """(route name, method, target) of one protected resource per family: junk credentials get a 4xx from each."""
    p, g = seed.project, seed.group
    return [
        ("git.info_refs", "GET", f"/{p.full_path}.git/info/refs?service=git-upload-pack"),
        ("git.info_refs", "GET", f"/{seed.public_project.full_path}.git/info/refs?service=git-upload-pack"),
        ("git.receive_pack", "POST", f"/{p.full_path}.git/git-receive-pack"),
        ("registry_auth.token", "GET", f"/jwt/auth?service=container_registry&scope=repository:{p.full_path}:pull"),
        ("packages.generic.get", "GET", f"/api/v4/projects/{p.id}/packages/generic/pkg/1.0/f.txt"),
        ("packages.generic.put", "PUT", f"/api/v4/projects/{p.id}/packages/generic/pkg/1.0/f.txt"),
        ("packages.maven.group_get", "GET", f"/api/v4/groups/{g.id}/-/packages/maven/a/b/1/b-1.jar"),
        ("packages.pypi.index", "GET", f"/api/v4/projects/{seed.public_project.id}/packages/pypi/simple/"),
        ("api.user.current", "GET", "/api/v4/user"),
        ("api.projects.get", "GET", f"/api/v4/projects/{seed.public_project.id}"),
        ("api.project_deploy_tokens.create", "POST", f"/api/v4/projects/{p.id}/deploy_tokens"),
    ]


@given(data=st.data())
@settings(FUZZ, max_examples=examples(200))
async def test_authorization_values(port: int, seed: Seed, logs: oracle.Logs, data: st.DataObject) -> None:
    """Credentials nobody holds never pass, whatever their bytes; they are a 401 (never anonymous access), or a 400
    from the HTTP parser for bytes no header may carry."""
    name, method, raw = data.draw(st.sampled_from(protected(seed)), "target")
    route = next(r for r in ROUTES if r.name == name)
    path, _, query = raw.partition("?")
    cred = data.draw(junk_credential(seed), "credential")
    target = Target(route, method.encode(), path, query)
    status, entry, _ = await exchange(port, seed, logs, cred, target, (b"{}", b"application/json"))
    assert 400 <= status < 500, status
    if entry is not None and entry["route"] == name:
        # Sent and unusable credentials are refused as such: never treated as no credentials at all.
        assert status == 401, (name, status)


# --- what the HTTP parser refuses -------------------------------------------------------------------------------


async def test_unparseable_credentials_are_not_logged(port: int, seed: Seed, logs: oracle.Logs) -> None:
    """aiohttp quotes the line it cannot parse in its log; the gateway keeps the event and drops the line."""
    secret = seed.deploy_tokens["dt_project"].secret
    reply = await send(port, b"GET", b"/api/v4/user", [(b"PRIVATE-TOKEN", secret.encode() + b"\x01")])
    assert reply.status == 400
    assert any("unparseable request from 127.0.0.1" in line for line in logs.everything), logs.everything
    assert not [line for line in logs.everything if secret in line]
    assert not logs.failures


# A secret in a line aiohttp's parser refuses: a control byte in a value, a bad header name, a folded line.
UNPARSEABLE: list[tuple[str, Callable[[bytes], tuple[bytes, bytes]]]] = [
    ("control byte in PRIVATE-TOKEN", lambda s: (b"PRIVATE-TOKEN", s + b"\x01")),
    ("control byte in Basic", lambda s: (b"Authorization", b"Basic " + base64.b64encode(b"u:" + s) + b"\x00")),
    ("secret in a header name", lambda s: (b"X-" + s + b" x", b"1")),
    ("obsolete line folding", lambda s: (b"Authorization", b"Bearer\r\n " + s)),
]


@pytest.mark.parametrize("make", [m for _, m in UNPARSEABLE], ids=[n for n, _ in UNPARSEABLE])
async def test_unparseable_credentials_are_not_echoed(
    port: int, seed: Seed, make: Callable[[bytes], tuple[bytes, bytes]]
) -> None:
    """aiohttp's own 400 quotes the parser's message, which quotes the line; the gateway's server does not
    (gateway/server.py)."""
    secret = seed.deploy_tokens["dt_project"].secret.encode()
    reply = await send(port, b"GET", b"/api/v4/user", [make(secret)])
    assert reply.status == 400
    assert secret not in reply.raw and base64.b64encode(b"u:" + secret) not in reply.raw
    assert b"could not be parsed" in reply.body


# --- request targets --------------------------------------------------------------------------------------------


@given(
    method=st.sampled_from((b"GET", b"HEAD", b"POST", b"PUT", b"DELETE")),
    prefix=st.sampled_from(("", "api/v4/projects/", "api/v4/groups/", "v2/", "jwt/", "-/", "groups/", "g/sub/")),
    path=fuzz_path(8),
    suffix=st.sampled_from(
        (
            "",
            "/info/refs?service=git-upload-pack",
            "/git-upload-pack",
            "/git-receive-pack",
            "/-/settings/repository",
            "/deploy_tokens",
            "/packages/generic/p/1/f",
            "/packages/maven/a/b/1/b-1.jar",
            "/packages/npm/x",
            "/packages/pypi/simple/x/",
            "/members",
        )
    ),
    pairs=query_pairs,
    cred_index=st.integers(0, 1000),
)
@settings(FUZZ, max_examples=examples(200))
async def test_request_targets(
    port: int,
    seed: Seed,
    logs: oracle.Logs,
    method: bytes,
    prefix: str,
    path: str,
    suffix: str,
    pairs: list[tuple[str, str]],
    cred_index: int,
) -> None:
    """Paths the route table never meant: '..' raw and encoded, NUL, double encoding, unicode, overlong names."""
    creds = seed.credentials()
    cred = creds[cred_index % len(creds)]
    raw = f"/{prefix}{path}{suffix}"
    if pairs:
        raw += ("&" if "?" in raw else "?") + urlencode(pairs)
    logs.reset()
    reply = await send(port, method, raw.encode(), list(cred.headers))
    entry = oracle.check(seed, logs, cred.who, None, reply)
    event(f"{str(entry['route']).split('.')[0] if entry else 'parser'} {reply.status}")


# --- API bodies ---------------------------------------------------------------------------------------------------

API_WRITES = tuple(r for r in ROUTES if r.name.startswith(("api.", "registry_auth.oauth")) and r.method != "GET")


# The parameters each write reads (lib/api/*.rb); all of them are drawn, each valid, hostile or absent.
FIELDS = {
    "api.projects.create": ("name", "path", "namespace_id", "visibility", "description"),
    "api.groups.create": ("name", "path", "parent_id", "visibility", "description"),
    "api.users.create": ("email", "name", "username", "password", "reset_password", "force_random_password", "admin"),
    "api.users.create_pat": ("name", "scopes", "expires_at"),
    "api.project_members.create": ("user_id", "username", "access_level", "expires_at"),
    "api.group_members.create": ("user_id", "username", "access_level", "expires_at"),
    "api.project_deploy_tokens.create": ("name", "scopes", "expires_at", "username"),
    "api.group_deploy_tokens.create": ("name", "scopes", "expires_at", "username"),
    "registry_auth.oauth": ("grant_type", "username", "password", "service", "scope", "refresh_token", "access_type"),
}


@pytest.mark.parametrize("route", API_WRITES, ids=lambda r: r.name)
@given(data=st.data())
@settings(FUZZ, max_examples=examples(40))
async def test_api_bodies(port: int, seed: Seed, logs: oracle.Logs, route: Route, data: st.DataObject) -> None:
    """Every API write with bodies of every shape, sent by principals that pass authorization, so the parameter
    parsing and validation behind it are what gets fuzzed."""
    target = data.draw(route_target(seed, (route,), real_ids=True), "target")
    who = data.draw(st.sampled_from(("admin", "owner", "dev", "outsider")), "who")
    cred = Cred(who, ((b"PRIVATE-TOKEN", seed.users[who].pat.encode()),))
    shaped = api_body(seed, FIELDS.get(route.name, ()))
    payload = data.draw(st.sampled_from((shaped, shaped, shaped, body())).flatmap(lambda s: s), "body")
    await exchange(port, seed, logs, cred, target, payload)


# --- list queries -------------------------------------------------------------------------------------------------

API_READS = tuple(r for r in ROUTES if r.name.startswith("api.") and r.method == "GET")


@given(data=st.data())
@settings(FUZZ, max_examples=examples(150))
async def test_api_queries(port: int, seed: Seed, logs: oracle.Logs, data: st.DataObject) -> None:
    """Every API read with fuzzed filters, ordering and pagination, by callers who see more or less of the seed."""
    target = data.draw(route_target(seed, API_READS, real_ids=data.draw(st.booleans())), "target")
    who = data.draw(st.sampled_from(("admin", "owner", "reader", "outsider", "anonymous")), "who")
    cred = Cred(who, ((b"PRIVATE-TOKEN", seed.users[who].pat.encode()),) if who != "anonymous" else ())
    await exchange(port, seed, logs, cred, target)


# --- /jwt/auth ------------------------------------------------------------------------------------------------------

ACTIONS = ("pull", "push", "delete", "*", "PULL", "pull,push", "push,pull,delete,*", "", "pull,,", "x")


@st.composite
def scope_param(draw: st.DrawFn, seed: Seed) -> str:
    """Mostly images of the seeded projects (so that grants happen), then groups, host prefixes and anything."""
    image = st.tuples(st.sampled_from(seed.full_paths), st.sampled_from(("", "/img", "/a/b", "/a/b/c"))).map("".join)
    weighted: tuple[st.SearchStrategy[str], ...] = (
        image,
        image,
        image,
        image.map(str.upper),
        image.map(lambda n: "127.0.0.1:5000/" + n),
        st.sampled_from(("g/sub", "pubg", "g")),
        fuzz_path(3),
    )
    name = draw(st.sampled_from(weighted).flatmap(lambda s: s))
    kind = draw(st.sampled_from(("repository",) * 6 + ("registry", "repository(plugin)", "REPOSITORY", "")))
    if kind == "registry":
        name = draw(st.sampled_from(("catalog", name)))
    return f"{kind}:{name}:{draw(st.sampled_from(ACTIONS))}"


@given(data=st.data())
@settings(FUZZ, max_examples=examples(200))
async def test_jwt_auth_grants(
    port: int, seed: Seed, logs: oracle.Logs, signing_key: SigningKey, data: st.DataObject
) -> None:
    """A registry token lists only requested actions among pull/push/delete on repositories, `*` on the catalog
    to administrators only; a deploy token never gets delete, never a repository it does not reach unless public."""
    scopes = data.draw(st.lists(scope_param(seed), max_size=5), "scopes")
    cred = data.draw(any_credential(seed), "credential")
    pairs = [("service", data.draw(st.sampled_from(("container_registry",) * 6 + ("other", ""))))]
    pairs += [("scope", " ".join(scopes[i : i + 2])) for i in range(0, len(scopes), 2)]
    pairs += data.draw(query_pairs, "extra")
    post = data.draw(st.booleans(), "post")
    route = next(r for r in ROUTES if r.name == ("registry_auth.oauth" if post else "registry_auth.token"))
    secrets: list[bytes] = []
    payload: tuple[bytes, bytes | None]
    if post:
        username, password = data.draw(password_grant(seed), "grant")
        secrets.append(password.encode())
        form = [("grant_type", "password"), ("username", username), ("password", password), *pairs]
        form.append(("access_type", data.draw(st.sampled_from(("offline", "online")))))
        target = Target(route, b"POST", "/jwt/auth", "")
        payload = (urlencode(form).encode(), b"application/x-www-form-urlencoded")
        cred = Cred(oracle_who(seed, username, password), ())
    else:
        target = Target(route, b"GET", "/jwt/auth", urlencode(pairs))
        payload = (b"", None)
    status, _, reply_body = await exchange(port, seed, logs, cred, target, payload, secrets=secrets)
    if status != 200:
        return
    answer = json.loads(reply_body)
    token = answer.get("token") or answer["access_token"]
    claims = jwt.decode(
        token,
        signing_key.private_key.public_key(),
        algorithms=[signing_key.algorithm],
        audience="container_registry",
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    asked: dict[tuple[str, str], set[str]] = {}
    for item in " ".join(scopes).split():
        kind, _, rest = item.partition(":")
        name, _, actions = rest.rpartition(":")
        asked.setdefault((kind, name.lower()), set()).update(actions.split(","))
    base, _ = split_who(cred.who)
    event(f"granted {sorted({a for access in claims['access'] for a in access['actions']})}")
    for access in claims["access"]:
        key = (access["type"], access["name"])
        assert key in asked, f"granted {key} that was not asked for"
        assert set(access["actions"]) <= asked[key], (access, asked[key])
        if access["type"] == "registry":
            assert access == {"type": "registry", "name": "catalog", "actions": ["*"]}
            assert base == "admin", f"{cred.who} got the catalog"
            continue
        assert access["type"] == "repository", access
        assert set(access["actions"]) <= {"pull", "push", "delete"}, access
        project = access["name"].removeprefix("127.0.0.1:5000/")
        public = project.startswith(seed.public_project.full_path)
        if base in DEPLOY_TOKENS:
            assert "delete" not in access["actions"], f"{cred.who} may delete images"
            reaches = project.startswith(seed.project.full_path) or (
                base == "dt_group" and project.startswith(seed.group.full_path + "/")
            )
            assert reaches or (public and access["actions"] == ["pull"]), f"{cred.who} got {access}"
        if base == "outsider" and project.startswith(f"{seed.users['outsider'].user.username}/mine"):
            continue  # the Owner of the personal namespace `mine` is in (gitlab-behaviour.md §4)
        if base in ("junk", "anonymous", "blocked", "outsider"):
            assert public and access["actions"] == ["pull"], f"{cred.who} got {access}"


def oracle_who(seed: Seed, username: str, password: str) -> str:
    """Who a password grant signs in as. A PAT names its user whatever the username (GitLab's auth.rb
    personal_access_token_check ignores it); a deploy token needs its own username; a password its user's."""
    for who, actor in seed.users.items():
        if password == actor.pat:
            return who
        if username == actor.user.username and password == actor.password:
            return f"{who}+pw"
    for who, created in seed.deploy_tokens.items():
        if password == created.secret:
            return who if username == created.token.username else f"{who}?"
    return "junk"


@st.composite
def password_grant(draw: st.DrawFn, seed: Seed) -> tuple[str, str]:
    """The OAuth2 password grant's username and password: real pairs, crossed pairs, and junk."""
    pairs = [(a.user.username, a.pat) for a in seed.users.values()]
    pairs += [(a.user.username, a.password) for a in seed.users.values()]
    pairs += [(c.token.username, c.secret) for c in seed.deploy_tokens.values()]
    username, password = draw(st.sampled_from(pairs))
    other = draw(st.sampled_from(pairs))[0]
    return draw(
        st.sampled_from(((username, password), (other, password), (username, MARKER), (username, password + "x")))
    )


# --- package uploads ----------------------------------------------------------------------------------------------

PACKAGE_WRITES = tuple(r for r in ROUTES if r.name.startswith("packages.") and r.method in ("PUT", "POST"))


def stored_files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@given(data=st.data())
@settings(FUZZ, max_examples=examples(200))
async def test_package_uploads_stay_in_their_project(
    port: int, seed: Seed, logs: oracle.Logs, tmp_path: Path, data: st.DataObject
) -> None:
    """Whatever the path, a stored package file lands under its own format and project, of a project the
    uploader may write to, nothing is written anywhere else, and what was stored is what is read back."""
    # Half of the time the private project and one who may write to it, so that uploads do get stored.
    if data.draw(st.booleans(), "writer"):
        ids = (str(seed.project.id), quote(seed.project.full_path, safe=""))
        fuzzed = route_target(seed, PACKAGE_WRITES, ids=ids)
        valid = st.tuples(st.sampled_from(ids), st.sampled_from(VALID_UPLOADS)).map(
            lambda t: Target(next(r for r in ROUTES if r.name == t[1][0]), b"PUT", PKG.format(t[0]) + t[1][1], "")
        )
        target = data.draw(st.one_of(valid, fuzzed), "target")
        writers = [c for c in seed.credentials() if oracle.may(c.who, "proj", "pkg_write")]
        cred = data.draw(st.sampled_from(writers), "credential")
    else:
        target = data.draw(route_target(seed, PACKAGE_WRITES, real_ids=True), "target")
        cred = data.draw(any_credential(seed), "credential")
    root = tmp_path / "data" / "packages"
    before = stored_files(root)
    outside_before = stored_files(tmp_path) - {Path("data/packages") / p for p in before}
    if target.route.name == "packages.pypi.upload":  # twine's multipart form, read far enough to learn the name
        payload = data.draw(body(), "body")
    else:
        payload = (
            data.draw(st.binary(max_size=64), "body"),
            data.draw(st.sampled_from((None, b"application/octet-stream"))),
        )
    status, _, _ = await exchange(port, seed, logs, cred, target, payload)
    new = stored_files(root) - before
    outside = stored_files(tmp_path) - {Path("data/packages") / p for p in stored_files(root)}
    unexpected = {
        p for p in outside - outside_before if p.parts[:2] != ("data", "repositories") and p.parts[0] != "store.db"
    }
    assert not unexpected, unexpected
    # An upload stored (a fuzzed method, a GET of a file an earlier example stored, answers 200 as well).
    stored = status in (200, 201) and target.method == b"PUT"
    if stored and target.route.name in EMBEDDED_PUTS and not target.path.endswith(CHECKSUMS):
        extra = data.draw(st.lists(st.sampled_from(RANGES), max_size=1), "range")
        reply = await send(port, b"GET", target.raw, [*cred.headers, *extra])
        logs.reset()
        if extra:
            assert reply.status in (200, 206, 416), reply.status
        else:
            assert (reply.status, reply.body) == (200, payload[0])
    writers = {seed.project.id: "proj", seed.personal.id: "mine"}
    for path in new:
        if path.parts[0] in ("blobs", "tmp"):
            continue
        fmt, project_id = path.parts[0], int(path.parts[1])
        assert fmt in ("generic", "maven"), path
        resource = writers.get(project_id)
        if resource is not None:
            assert oracle.may(cred.who, resource, "pkg_write"), f"{cred.who} stored {path}"
        else:
            assert project_id == seed.public_project.id, path
            assert split_who(cred.who)[0] == "admin", f"{cred.who} stored {path}"


PKG = "/api/v4/projects/{}/packages/"
VALID_UPLOADS = (
    ("packages.generic.put", "generic/pkg/1.0.0/file.tar.gz"),
    ("packages.generic.put", "generic/Pkg_Name.x/1.0.0/a~b+c"),
    ("packages.maven.put", "maven/com/example/app/1.0/app-1.0.jar"),
    ("packages.maven.put", "maven/com/example/app/1.0/app-1.0.jar.sha1"),
    ("packages.maven.put", "maven/com/example/app/maven-metadata.xml"),
    ("packages.maven.put", "maven/com/example/app/1.0-SNAPSHOT/app-1.0-20260101.120000-1.jar"),
)
EMBEDDED_PUTS = ("packages.generic.put", "packages.maven.put")  # the formats the embedded store keeps
CHECKSUMS = (".md5", ".sha1", ".sha256", ".sha512")
RANGES = ((b"Range", b"bytes=0-0"), (b"Range", b"bytes=5-1"), (b"Range", b"bytes=-1,0-"), (b"Range", b"bytes=x"))


# --- UI with a session ---------------------------------------------------------------------------------------------

WEB_ROUTES = tuple(r for r in ROUTES if r.name.startswith("web."))


@given(data=st.data())
@settings(FUZZ, max_examples=examples(200))
async def test_web_pages_with_a_session(
    port: int, seed: Seed, logs: oracle.Logs, store: Store, data: st.DataObject
) -> None:
    """Signed-in UI requests with valid, missing and forged CSRF tokens and cookies, fuzzed paths and forms."""
    who = data.draw(st.sampled_from(("owner", "dev", "outsider", "admin")), "who")
    session_id = await sessions.start(store, seed.users[who].user, T0)
    token = csrf.token_for(session_id)
    cookie = data.draw(
        st.sampled_from((f"{sessions.COOKIE}={session_id}", f"{sessions.COOKIE}={session_id[:-1]}x", "")), "cookie"
    )
    target = data.draw(route_target(seed, WEB_ROUTES), "target")
    fields = data.draw(
        st.dictionaries(
            st.sampled_from(("name", "expires_at", "username", "scopes", "confirmed", "password", "return_to")),
            st.one_of(st.sampled_from(("yes", "read_repository", "2030-01-01", "", "x" * 300)), st.text(max_size=20)),
            max_size=5,
        ),
        "form",
    )
    form = [*fields.items(), (csrf.FIELD, data.draw(st.sampled_from((token, "", token[:-1] + "A")), "csrf"))]
    if "scopes" in fields:
        form.append(("scopes", data.draw(st.sampled_from(("read_registry", "write_package_registry", "api")))))
    payload = (
        (urlencode(form).encode(), b"application/x-www-form-urlencoded") if target.method == b"POST" else (b"", None)
    )
    extra = [(b"Cookie", cookie.encode())] if cookie else []
    secrets = [session_id.encode()]
    status, entry, _ = await exchange(
        port, seed, logs, Cred("anonymous", ()), target, payload, extra, secrets, session=who
    )
    if entry is None or not 200 <= status < 300 or entry["route"] in ("web.login_form", "web.static"):
        return
    assert cookie.endswith(session_id), f"{entry['route']} answered {status} without a valid session"
    ref = target.params.get("path")
    if entry["route"] == target.route.name and ref is not None and entry["route"] != "web.home":
        # Settings pages and their forms need Maintainer (projects) or Maintainer/Owner (groups).
        kind = "group" if target.route.name.startswith("web.group") else "project"
        resource = oracle.resource_of(seed, kind, ref)
        if resource is not None:
            assert oracle.may(who, resource, "api_write"), f"{who} used {entry['route']} of {resource}"


# --- PyPI upload forms ------------------------------------------------------------------------------------------------

PYPI_FIELDS = (":action", "name", "version", "content", "metadata_version", "sha256_digest")


@st.composite
def pypi_form(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """twine's multipart form, from faithful to broken: field order, names, file names, boundaries, framing."""
    boundary = draw(st.one_of(st.sampled_from(BOUNDARIES), st.text(min_size=1, max_size=30)))
    faithful = [
        (":action", None, b"file_upload"),
        ("name", None, draw(st.sampled_from((b"pkg", b"Pkg.Name", b"other", b"../x", b"")))),
        ("version", None, b"1.0"),
        ("content", draw(st.sampled_from(("pkg-1.0.tar.gz", "pkg-1.0-py3-none-any.whl", "other-1.0.zip"))), b"x"),
    ]
    fields = draw(
        st.permutations(faithful).map(list)
        | st.just(faithful)
        | st.lists(
            st.tuples(
                st.sampled_from(PYPI_FIELDS),
                st.one_of(st.none(), st.sampled_from(("pkg-1.0.tar.gz", "other-1.0-py3-none-any.whl", "x"))),
                st.one_of(st.sampled_from((b"file_upload", b"pkg", b"1.0", b"remove_pkg")), st.binary(max_size=30)),
            ),
            max_size=6,
        )
    )
    data = multipart(boundary, fields)
    cut = draw(st.integers(0, len(data)))
    if draw(st.booleans()):
        data = data[:cut]  # a form that ends early
    declared = draw(st.one_of(st.just(boundary.encode("utf-8", "surrogatepass")), header_value))
    ctype = draw(
        st.sampled_from((b"multipart/form-data; boundary=", b"multipart/form-data;boundary=", b"text/plain; boundary="))
    )
    return data, ctype + declared


@given(data=st.data())
@settings(FUZZ, max_examples=examples(150))
async def test_pypi_upload_forms(port: int, seed: Seed, logs: oracle.Logs, data: st.DataObject) -> None:
    who = data.draw(st.sampled_from(("dt_packages", "dt_project", "owner")), "who")
    secret = seed.deploy_tokens[who].secret if who in DEPLOY_TOKENS else seed.users[who].pat
    cred = Cred(who, ((b"Authorization", basic("__token__", secret)),))
    route = next(r for r in ROUTES if r.name == "packages.pypi.upload")
    target = Target(route, b"POST", f"/api/v4/projects/{seed.project.id}/packages/pypi", "")
    status, _, _ = await exchange(port, seed, logs, cred, target, data.draw(pypi_form(), "form"))
    assert status in (400, 413, 502), status  # malformed → 400; well-formed → forwarded to a backend that is down
