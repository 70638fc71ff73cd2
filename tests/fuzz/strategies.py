"""Hypothesis strategies for hostile HTTP: path segments, request targets built from THE route table, query strings,
bodies, header values and credentials (real, mutated and junk)."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from hypothesis import strategies as st

from gateway.routes import ROUTES, Route
from tests.fuzz.seed import Cred, Seed, split_who

# A string that looks like a secret and must never come back in a response.
MARKER = "gldt-FuzzMarker7q3xZk9"

# Segments that have broken path handling somewhere: traversal (raw, percent-encoded once and twice, overlong UTF-8),
# NUL and newlines, backslashes, reserved route words, numbers that overflow, long and non-ASCII names.
TRICKS = (
    "..",
    ".",
    "%2e%2e",
    "%2E%2E",
    ".%2e",
    "%2e",
    "%00",
    "%2500",
    "%252F",
    "%2F",
    "%2f..%2f",
    "%5C",
    "%5c..%5c",
    "..%5c",
    "%0a",
    "%0d%0a",
    "%ff",
    "%c0%ae%c0%ae",
    "%e2%80%ae",
    "%",
    "%zz",
    "%%2e",
    "~",
    "@",
    ":",
    ";",
    "-",
    "+",
    "*",
    "'",
    "%22",
    "%3Cscript%3E",
    "$%7Bx%7D",
    ".git",
    "HEAD",
    "info",
    "refs",
    "objects",
    "settings",
    "repository",
    "deploy_tokens",
    "deploy_token",
    "packages",
    "groups",
    "api",
    "v4",
    "0",
    "1",
    "-1",
    "007",
    "1e3",
    "0x10",
    "99999999999999999999",
    "9223372036854775808",
    "%C3%BC",
    "%E6%97%A5%E6%9C%AC",
    "%F0%9D%94%98",
    "a" * 300,
)

_SEGMENT_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="/?#"), min_size=1, max_size=16)
segment = st.one_of(
    st.sampled_from(TRICKS),
    _SEGMENT_TEXT.map(lambda s: quote(s, safe="")),
    # Leaves '%' alone, so broken escapes ("%zz", "%") reach the server too.
    _SEGMENT_TEXT.map(lambda s: quote(s, safe="%:@!$&'()*+,;=~")),
)


def fuzz_path(max_segments: int = 5) -> st.SearchStrategy[str]:
    return st.lists(segment, min_size=1, max_size=max_segments).map("/".join)


# --- query strings --------------------------------------------------------------------------------------------------

QUERY_KEYS = (
    "page",
    "per_page",
    "order_by",
    "sort",
    "search",
    "username",
    "membership",
    "owned",
    "min_access_level",
    "visibility",
    "all_available",
    "active",
    "user_ids",
    "user_ids[]",
    "include_subgroups",
    "top_level_only",
    "query",
    "service",
    "scope",
    "account",
    "client_id",
    "offline_token",
    "return_to",
    "revoked",
    "v",
    "name",
    "scopes[]",
)
VALUES = (
    "",
    "0",
    "-1",
    "1",
    "true",
    "false",
    "yes",
    "null",
    "[]",
    "{}",
    "1e9",
    "99999999999999999999",
    "18446744073709551616",
    "-9223372036854775809",
    "asc",
    "desc",
    "id",
    "name",
    "path",
    "similarity",
    "public",
    "private",
    "internal",
    "10",
    "20",
    "30",
    "40",
    "50",
    "git-upload-pack",
    "git-receive-pack",
    "container_registry",
    "repository:g/sub/proj:pull,push,delete,*",
    "registry:catalog:*",
    "repository:g/sub/proj",
    "a,b,,c",
    "//evil.example/",
    "/\\evil",
    "/-/login",
    "\x00",
    "ü",
    "x" * 2000,
)
value = st.one_of(st.sampled_from(VALUES), st.text(st.characters(exclude_categories=("Cs",)), max_size=40))
query_pairs = st.lists(st.tuples(st.one_of(st.sampled_from(QUERY_KEYS), st.text(max_size=10)), value), max_size=6)


def encode_query(pairs: list[tuple[str, str]], raw: bool) -> str:
    if raw:  # broken escapes and bare separators, as a hostile client writes them
        return "&".join(f"{quote(k, safe='%[]=&')}={quote(v, safe='%[]=&:,/')}" for k, v in pairs)
    return urlencode(pairs)


# --- bodies ---------------------------------------------------------------------------------------------------------

BODY_KEYS = (
    "name",
    "scopes",
    "expires_at",
    "username",
    "path",
    "namespace_id",
    "parent_id",
    "visibility",
    "description",
    "email",
    "password",
    "reset_password",
    "force_random_password",
    "admin",
    "access_level",
    "user_id",
    "user_ids",
    "grant_type",
    "service",
    "scope",
    "refresh_token",
    "access_type",
    "authenticity_token",
    "return_to",
    "confirmed",
)
SCOPE_NAMES = (
    "read_repository",
    "read_registry",
    "write_registry",
    "read_package_registry",
    "write_package_registry",
    "api",
    "read_api",
    "write_repository",
)
BIG_INTS = (2**63 - 1, 2**63, -(2**63) - 1, 10**30, -1, 0)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(BIG_INTS),
    st.floats(),
    st.sampled_from(VALUES + SCOPE_NAMES),
    st.text(max_size=30),
)
json_value = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
json_object = st.dictionaries(st.one_of(st.sampled_from(BODY_KEYS), st.text(max_size=10)), json_value, max_size=7)

# Bodies that have made JSON and form parsers raise something other than ValueError.
PATHOLOGICAL = (
    b"[" * 100_000,
    b"{" * 60_000,
    b'{"a":' * 20_000,
    b"[" * 5000 + b"]" * 5000,
    b'{"name": 1e400, "namespace_id": 1e400}',
    b'{"namespace_id": 100000000000000000000000000000}',
    b'{"parent_id": -100000000000000000000000000000}',
    b'{"user_id": 9223372036854775808, "access_level": 9223372036854775808}',
    b'{"scopes": {"read_repository": true}}',
    b'{"scopes": [[["read_repository"]]]}',
    b'{"expires_at": "9999-12-31T23:59:59-23:59"}',
    b'{"expires_at": "0001-01-01T00:00:00+23:59"}',
    b'{"name": "\\ud800"}',
    b"\xff\xfe{\x00}\x00",
    b"\xef\xbb\xbf{}",
    b"null",
    b"NaN",
    b'"just a string"',
    b"name=%ff%fe&scopes=%00",
    b"a=1&a=2&a[]=3&=&&%%%",
    b"\x00" * 64,
)


def form_body(obj: dict[str, object]) -> bytes:
    pairs: list[tuple[str, str]] = []
    for key, item in obj.items():
        if isinstance(item, list):
            pairs += [(f"{key}[]", json.dumps(x) if not isinstance(x, str) else x) for x in item]
        else:
            pairs.append((key, item if isinstance(item, str) else json.dumps(item)))
    return urlencode(pairs).encode()


def multipart(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += b"--" + boundary.encode("utf-8", "surrogatepass") + b"\r\n"
        out += b"Content-Disposition: " + disposition.encode("utf-8", "surrogatepass") + b"\r\n\r\n" + data + b"\r\n"
    return out + b"--" + boundary.encode("utf-8", "surrogatepass") + b"--\r\n"


BOUNDARIES = ("b0undary", "x", "", "a" * 250, "ü€", '"quoted"', "semi;colon", "\x7f")
multipart_part = st.tuples(
    st.sampled_from((":action", "name", "version", "content", "protocol_version", "authenticity_token", "scopes")),
    st.one_of(st.none(), st.sampled_from(("pkg-1.0.tar.gz", "pkg-1.0-py3-none-any.whl", "../x.whl", "", "a\x00.whl"))),
    st.one_of(st.sampled_from((b"file_upload", b"pkg", b"1.0", b"")), st.binary(max_size=40)),
)


@st.composite
def body(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    """(body, Content-Type) in every shape the gateway parses, matched or mismatched on purpose."""
    kind = draw(st.sampled_from(("none", "json", "form", "multipart", "raw", "pathological")))
    if kind == "none":
        return b"", None
    if kind == "json":
        data = json.dumps(draw(json_object)).encode()
        return data, draw(st.sampled_from((b"application/json", b"application/json; charset=utf-8", b"text/plain")))
    if kind == "form":
        return form_body(draw(json_object)), b"application/x-www-form-urlencoded"
    if kind == "multipart":
        boundary = draw(st.sampled_from(BOUNDARIES))
        parts = draw(st.lists(multipart_part, max_size=5))
        declared = draw(st.sampled_from((boundary, "other", "")))
        ctype = b"multipart/form-data" + (b"; boundary=" + declared.encode() if declared else b"")
        return multipart(boundary, parts), ctype
    raw_type: bytes | None = draw(
        st.one_of(
            st.none(),
            st.sampled_from(
                (
                    b"application/json",
                    b"application/x-www-form-urlencoded",
                    b"multipart/form-data; boundary=x",
                    b"application/octet-stream",
                    b"application/x-git-upload-pack-request",
                    b"application/x-git-receive-pack-request",
                    b"text/html",
                    b"application/json; charset=utf-16",
                    b"multipart/form-data; boundary=\xc3\xbc\xe2\x82\xac",
                    b";;;",
                    b"\xff/\xfe",
                )
            ),
        )
    )
    if kind == "raw":
        return draw(st.binary(max_size=300)), raw_type
    return draw(st.sampled_from(PATHOLOGICAL)), raw_type


# --- header values ----------------------------------------------------------------------------------------------

# Anything but CR and LF (which would end the header line and make the rest another header).
header_bytes = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
header_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"), max_size=60).map(
    lambda s: s.encode("utf-8")
)
header_value = st.one_of(header_bytes, header_text, st.sampled_from((b"", b" ", b"\t", b"\x00", b"\x7f", b"\xff")))

EXTRA_HEADERS = (
    b"Accept",
    b"Accept-Encoding",
    b"Content-Encoding",
    b"Cookie",
    b"X-Forwarded-For",
    b"X-Forwarded-Proto",
    b"X-Forwarded-Host",
    b"Git-Protocol",
    b"Range",
    b"If-None-Match",
    b"If-Modified-Since",
    b"Origin",
    b"X-Request-Id",
)
extra_headers = st.lists(
    st.tuples(
        st.sampled_from(EXTRA_HEADERS),
        st.one_of(
            header_text,
            st.sampled_from((b"gzip", b"version=2", b"bytes=0-0", b"bytes=5-1,0-", b"127.0.0.1, ::1", b"https")),
        ),
    ),
    max_size=3,
)


# --- credentials ----------------------------------------------------------------------------------------------------

AUTH_HEADERS = (b"Authorization", b"PRIVATE-TOKEN", b"Deploy-Token", b"Job-Token", b"authorization", b"private-token")
SCHEMES = (b"Basic ", b"Bearer ", b"basic ", b"BEARER ", b"Basic", b"Digest ", b"Token ", b"", b"Basic  ", b" Bearer ")


def mutate(secret: str) -> st.SearchStrategy[str]:
    """A real secret changed so that it can no longer be valid: one character replaced, cut, or extended."""
    index = st.integers(0, len(secret) - 1)
    return st.one_of(
        st.tuples(index, st.characters(exclude_categories=("Cs", "Zs", "Cc")))
        .map(lambda t: secret[: t[0]] + t[1] + secret[t[0] + 1 :])
        .filter(lambda s: s != secret),
        index.map(lambda i: secret[:i]),
        st.text(st.characters(exclude_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=5).map(lambda s: secret + s),
    )


@st.composite
def junk_credential(draw: st.DrawFn, seed: Seed, *, any_bytes: bool = True) -> Cred:
    """Credentials no principal holds: random bytes, broken base64, mutated real secrets, huge values. Without
    `any_bytes`, only bytes the HTTP parser lets through (so the request reaches the gateway)."""
    name = draw(st.sampled_from(AUTH_HEADERS))
    scheme = draw(st.sampled_from(SCHEMES)) if name.lower() == b"authorization" else b""
    real = [a.pat for a in seed.users.values()] + [c.secret for c in seed.deploy_tokens.values()]
    users = [a.user.username for a in seed.users.values()] + [c.token.username for c in seed.deploy_tokens.values()]
    payload = draw(
        st.one_of(
            header_value if any_bytes else header_text,
            st.binary(max_size=80).map(lambda b: base64.b64encode(b)),
            st.tuples(st.sampled_from([*users, "", ":", "\x00"]), st.sampled_from(real).flatmap(mutate)).map(
                lambda t: base64.b64encode(f"{t[0]}:{t[1]}".encode())
            ),
            st.sampled_from(real).flatmap(mutate).map(lambda s: s.encode()),
            # A real secret followed by a byte no header may carry: the HTTP parser refuses the line (400).
            st.sampled_from(real).map(lambda s: s.encode() + (b"\x01" if any_bytes else b"!")),
            st.just(MARKER.encode()),
            st.just(base64.b64encode(f"root:{MARKER}".encode())),
            st.integers(1000, 9000 if any_bytes else 8000).map(lambda n: b"A" * n),
            st.sampled_from((b"=", b"====", b"Og==", b"OjpwYXNz", b"\xff\xff", b"%00", b"null")),
        )
    )
    return Cred("junk", ((name, scheme + payload),))


def any_credential(seed: Seed) -> st.SearchStrategy[Cred]:
    """A seeded principal's credentials, each principal about equally often (hypothesis favours the first items of
    one long list), in any of the forms it can present them."""
    by_who: dict[str, list[Cred]] = {}
    for cred in seed.credentials():
        by_who.setdefault(split_who(cred.who)[0], []).append(cred)
    return st.sampled_from(sorted(by_who)).flatmap(lambda who: st.sampled_from(by_who[who]))


def credential(seed: Seed) -> st.SearchStrategy[Cred]:
    """Seeded credentials or junk (junk limited to bytes the HTTP parser accepts, so it reaches the gateway)."""
    return st.one_of(any_credential(seed), junk_credential(seed, any_bytes=False))


# --- request targets from THE route table -------------------------------------------------------------------------

_PARAM = re.compile(r"\{(\w+)(?::(?:[^{}]|\{[^{}]*\})*)?\}")


@dataclass(frozen=True)
class Target:
    route: Route
    method: bytes
    path: str
    query: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def raw(self) -> bytes:
        return (self.path + ("?" + self.query if self.query else "")).encode("utf-8")


def _ids(seed: Seed) -> list[str]:
    projects = (seed.project, seed.public_project, seed.personal)
    groups = (seed.group, seed.sub, seed.public_group)
    refs = [str(p.id) for p in projects] + [str(g.id) for g in groups]
    refs += [quote(p.full_path, safe="") for p in projects] + [quote(g.full_path, safe="") for g in groups]
    refs += [
        quote(seed.project.full_path.upper(), safe=""),
        seed.project.full_path,
        quote(quote(seed.project.full_path, safe=""), safe=""),
    ]
    return refs


def placeholder(seed: Seed, name: str, *, real_ids: bool = False, ids: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    paths = seed.full_paths + [g.full_path for g in (seed.group, seed.sub, seed.public_group)]
    real_paths = st.sampled_from(paths + [p + ".git" for p in paths] + [p.upper() for p in paths])
    if name == "id":
        if ids:
            return st.sampled_from(ids)
        return st.sampled_from(_ids(seed)) if real_ids else st.one_of(st.sampled_from(_ids(seed)), segment)
    if name in ("repo", "path"):
        package_paths = st.sampled_from(
            (
                "com/example/app/1.0/app-1.0.jar",
                "com/example/app/1.0/app-1.0.jar.sha1",
                "com/example/app/maven-metadata.xml",
                "com/example/app/1.0-SNAPSHOT/maven-metadata.xml.md5",
                "@scope/name",
                "@scope%2fname",
                "left-pad",
                "left-pad/-/left-pad-1.0.0.tgz",
                "@scope/name/-/name-1.0.0.tgz",
                "pkg-1.0.tar.gz",
                "sub/pkg-1.0-py3-none-any.whl",
                "pkg-1.0-py3-none-any.whl.metadata",
            )
        )
        return st.one_of(real_paths, package_paths, package_paths, fuzz_path())
    if name == "token_id":
        return st.one_of(st.sampled_from([str(c.token.id) for c in seed.deploy_tokens.values()]), segment)
    if name == "user_id":
        return st.one_of(st.sampled_from([str(a.user.id) for a in seed.users.values()]), segment)
    if name in ("name", "version", "file"):
        plausible = st.sampled_from(("pkg", "Pkg_Name.x", "1.0.0", "file.tar.gz", "left-pad", "style.css"))
        return st.one_of(plausible, plausible, plausible, segment)
    if name == "sha256":
        return st.one_of(st.just("a" * 64), segment)
    if name == "slash":
        return st.sampled_from(("", "/"))
    if name == "tail":
        return st.one_of(
            st.sampled_from(("", "/", "/_catalog", "/g/sub/proj/manifests/latest")), fuzz_path().map("/".__add__)
        )
    return segment


METHODS = (b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS")


@st.composite
def route_target(
    draw: st.DrawFn,
    seed: Seed,
    routes: tuple[Route, ...] = ROUTES,
    *,
    real_ids: bool = False,
    ids: tuple[str, ...] = (),
) -> Target:
    """A request for one of `routes`, its placeholders filled; `real_ids`: `:id` always names a seeded project
    or group (in one of its spellings), so requests get past the lookup; `ids`: `:id` is one of these."""
    route = draw(st.sampled_from(routes))
    params: dict[str, str] = {}

    def fill(m: re.Match[str]) -> str:
        params[m.group(1)] = draw(placeholder(seed, m.group(1), real_ids=real_ids, ids=ids))
        return params[m.group(1)]

    path = _PARAM.sub(fill, route.path)
    method = route.method.encode() if route.method != "*" else draw(st.sampled_from(METHODS))
    if draw(st.integers(0, 19)) == 0:  # now and then a method the route does not answer
        method = draw(st.sampled_from(METHODS))
    pairs = draw(query_pairs)
    if route.name == "git.info_refs" and draw(st.booleans()):
        pairs = [("service", draw(st.sampled_from(("git-upload-pack", "git-receive-pack")))), *pairs]
    if route.name.startswith("registry_auth") and draw(st.integers(0, 3)) > 0:
        pairs = [("service", "container_registry"), *pairs]
    return Target(route, method, path, encode_query(pairs, draw(st.booleans())), params)


# --- API bodies: valid-looking parameters with hostile ones mixed in ------------------------------------------------


OMIT = object()


def api_fields(seed: Seed, keys: tuple[str, ...] = ()) -> st.SearchStrategy[dict[str, object]]:
    """The parameters `keys` of one API write (all known ones when none are given): a valid request (real ids,
    valid names) with, mostly, one parameter spoiled: an invalid value of its kind, a huge number, a wrong type.
    Parameters are validated one after the other and the first bad one ends the request, so a single hostile
    value behind valid ones is what reaches the deeper checks."""
    namespaces = [seed.group.id, seed.sub.id, seed.public_group.id, seed.personal.namespace.id]
    user_ids = [a.user.id for a in seed.users.values()]
    dates = ("2030-01-01", "2030-01-01T00:00:00Z", "2030-01-01T00:00:00+14:00", "")
    valid: dict[str, st.SearchStrategy[object]] = {
        "name": st.sampled_from(("fuzz", "Fuzz (x)", "ü name", "a+b", "fuzz_2")),
        "path": st.sampled_from(("fuzz-1", "fuzz.2", "Fuzz_3")),
        "namespace_id": st.sampled_from(namespaces),
        "parent_id": st.sampled_from(namespaces),
        "visibility": st.sampled_from(("private", "internal", "public")),
        "description": st.text(max_size=20),
        "email": st.sampled_from(("fuzz@example.com", "other@example.com")),
        "password": st.sampled_from(("password-123", "p" * 128)),
        "reset_password": st.sampled_from((True, False, "true")),
        "force_random_password": st.sampled_from((True, False, "1")),
        "admin": st.sampled_from((True, False, "yes", "no")),
        "username": st.sampled_from(("fuzz-user", "root", "OWNER", "fuzz.user+1")),
        "scopes": st.one_of(st.lists(st.sampled_from(SCOPE_NAMES[:5]), min_size=1, max_size=4), st.just("api")),
        "expires_at": st.sampled_from(dates),
        "user_id": st.sampled_from(user_ids),
        "user_ids": st.lists(st.sampled_from(user_ids), max_size=3),
        "access_level": st.sampled_from((10, 20, 30, 40, 50, "30")),
        "grant_type": st.sampled_from(("password", "refresh_token")),
        "service": st.just("container_registry"),
        "scope": st.sampled_from(("repository:g/sub/proj:pull,push", "registry:catalog:*", "")),
        "refresh_token": st.just("a.b.c"),
        "access_type": st.sampled_from(("offline", "online")),
    }
    invalid: dict[str, tuple[object, ...]] = {
        "name": ("", " ", "x" * 256, "-x", "\x00", "gitlab-deploy-token"),
        "path": ("", "-bad", "a.git", "groups", "..", "x" * 256, "a/b", "ü"),
        "visibility": ("secret", "PUBLIC"),
        "email": ("bad", "a@b@c", "", "x" * 300 + "@x"),
        "password": ("short", "x" * 200),
        "username": ("bad name", "", "x" * 300, "-", "gitlab+deploy-token-1"),
        "scopes": ("nope", "", [], ["api", "nope"], "read_repository,,write_registry"),
        "expires_at": (
            "tomorrow",
            "2020-01-01",
            "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00+23:59",
            "2030-02-30",
        ),
        "access_level": (0, 5, 60, "owner"),
        "grant_type": ("client_credentials", ""),
        "refresh_token": ("", "x" * 9000),
    }
    numbers = ("namespace_id", "parent_id", "user_id", "access_level")
    chosen = keys or tuple(valid)

    def hostile(key: str) -> st.SearchStrategy[object]:
        kinds = [st.sampled_from(BIG_INTS), json_value]
        if key in invalid:
            kinds.append(st.sampled_from(invalid[key]))
        if key in numbers:
            kinds.append(st.sampled_from((*BIG_INTS, "1e3", " 7", "-0", 1.5, True, None, [], {})))
        return st.one_of(kinds)

    base = st.fixed_dictionaries(
        {
            key: st.sampled_from((valid[key], valid[key], valid[key], st.just(OMIT))).flatmap(lambda v: v)
            for key in chosen
        }
    )
    spoiled = st.tuples(base, st.sampled_from(chosen).flatmap(lambda k: st.tuples(st.just(k), hostile(k)))).map(
        lambda t: {**t[0], t[1][0]: t[1][1]}
    )
    return st.one_of(spoiled, spoiled, spoiled, base).map(
        lambda fields: {k: v for k, v in fields.items() if v is not OMIT}
    )


@st.composite
def api_body(draw: st.DrawFn, seed: Seed, keys: tuple[str, ...] = ()) -> tuple[bytes, bytes | None]:
    fields = draw(api_fields(seed, keys))
    if draw(st.integers(0, 3)) == 0:
        return form_body(fields), b"application/x-www-form-urlencoded"
    return json.dumps(fields).encode(), b"application/json"
