"""What a fuzzed response may be: never a 500 (or a 502/503 where no backend exists), never an unhandled exception in
the logs, never a secret, never a principal other than the one whose credentials were sent, and never a success
that the seeded memberships and tokens do not allow (an upper bound written from the seed, not from policy.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, unquote

from tests.fuzz.rawhttp import Reply
from tests.fuzz.seed import Seed, split_who
from tests.fuzz.strategies import MARKER, Target

# Who may do what on the seed's private resources (tests/fuzz/seed.py), from its memberships and tokens:
# owner is Owner of g; dev is Developer of g/sub; reader is Owner of g with a read_api PAT; outsider owns `mine`;
# dt_project holds every scope on g/sub/proj, dt_group read_repository+read_registry on g, dt_packages the package
# scopes on g/sub/proj. Group-level package endpoints: group deploy tokens of exactly that group only.
MAY: dict[tuple[str, str], frozenset[str]] = {
    ("proj", "git_read"): frozenset({"admin", "owner", "dev", "dt_project", "dt_group"}),
    ("proj", "git_write"): frozenset({"admin", "owner", "dev"}),
    ("proj", "pkg_read"): frozenset({"admin", "owner", "dev", "reader", "dt_project", "dt_packages"}),
    ("proj", "pkg_write"): frozenset({"admin", "owner", "dev", "dt_project", "dt_packages"}),
    ("proj", "api_read"): frozenset({"admin", "owner", "dev", "reader"}),
    ("proj", "api_write"): frozenset({"admin", "owner"}),
    ("g", "pkg_read"): frozenset({"admin", "owner", "reader"}),
    ("g", "api_read"): frozenset({"admin", "owner", "reader"}),
    ("g", "api_write"): frozenset({"admin", "owner"}),
    ("sub", "pkg_read"): frozenset({"admin", "owner", "dev", "reader"}),
    ("sub", "api_read"): frozenset({"admin", "owner", "dev", "reader"}),
    ("sub", "api_write"): frozenset({"admin", "owner"}),
    **{
        ("mine", action): frozenset({"admin", "outsider"})
        for action in ("git_read", "git_write", "pkg_read", "pkg_write", "api_read", "api_write")
    },
}
ADMIN_ONLY_ROUTES = frozenset({"api.users.create", "api.users.create_pat", "api.deploy_tokens.all"})


def may(who: str, resource: str, action: str) -> bool:
    """Whether these credentials may perform `action` (git_read, pkg_write, api_read, ...) on a private resource."""
    base, how = split_who(who)
    allowed = MAY.get((resource, action), frozenset())
    if how == "pw":
        # A password is the user's full rights, whatever their PAT's scopes, but only git takes one (package
        # endpoints and the API want tokens; gitlab-behaviour.md §5).
        return action.startswith("git") and (base in allowed or (base == "reader" and "owner" in allowed))
    if how == "wrong-name":
        return action.startswith("pkg") and base in allowed  # only package endpoints ignore the Basic username
    return base in allowed


def resource_of(seed: Seed, kind: str, raw: str) -> str | None:
    """Which private seed resource a route parameter names (decoded once, as aiohttp does), if any."""
    ref = unquote(raw).lower().removesuffix(".git")
    projects = {"proj": seed.project, "mine": seed.personal}
    groups = {"g": seed.group, "sub": seed.sub}
    for name, thing in (projects if kind == "project" else groups).items():
        if ref == str(thing.id) or ref == thing.full_path.lower():
            return name
    return None


def action_of(route: str, method: bytes, query: str) -> str | None:
    """The MAY action a request performs (git-upload-pack is a POST that reads), None outside git/packages/API."""
    if route == "git.info_refs":
        return "git_write" if "git-receive-pack" in parse_qs(query).get("service", []) else "git_read"
    if route == "git.upload_pack":
        return "git_read"
    if route == "git.receive_pack":
        return "git_write"
    reads = method in (b"GET", b"HEAD")
    if route.startswith("packages."):
        return "pkg_read" if reads else "pkg_write"
    if route.startswith("api."):
        return "api_read" if reads else "api_write"
    return None


def identity(seed: Seed, who: str) -> str | None:
    """The principal these credentials may become, as the access log writes it (principals.describe)."""
    base, _ = split_who(who)
    if base in seed.users and base != "blocked":
        return f"user:{seed.users[base].user.id}"
    if base in seed.deploy_tokens:
        return f"deploy_token:{seed.deploy_tokens[base].token.id}"
    return None


# --- logs -----------------------------------------------------------------------------------------------------------


class Logs(logging.Handler):
    """The access log by request id, and every record that reports an unhandled exception.

    Not a dataclass on purpose: hypothesis takes the repr of the test's arguments for every example, and a repr that
    grows with the log made it report "Inconsistent data generation" instead of the real failure."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.access: dict[str, dict[str, object]] = {}
        self.failures: list[logging.LogRecord] = []
        self.everything: list[str] = []

    def __repr__(self) -> str:
        return f"Logs({len(self.access)} requests)"

    def reset(self) -> None:
        """Forget the previous exchange."""
        self.access.clear()
        self.everything.clear()
        self.failures.clear()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + repr(record.exc_info[1])
        self.everything.append(text)
        if record.name == "gateway.access":
            entry = json.loads(record.getMessage())
            self.access[str(entry["request_id"])] = entry
        elif record.levelno >= logging.ERROR:
            self.failures.append(record)


@contextmanager
def captured() -> Iterator[Logs]:
    logs = Logs()
    loggers = [logging.getLogger(name) for name in ("gateway", "aiohttp.server", "aiohttp.web")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(logs)
        lg.setLevel(logging.DEBUG if lg.name == "gateway" else logging.INFO)
    try:
        yield logs
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(logs)
            lg.setLevel(level)


# --- the checks -------------------------------------------------------------------------------------------------


def allowed_5xx(route: str) -> frozenset[int]:
    """The documented 5xx of a route in the fuzzed app: its backend is unset or refuses connections."""
    if route == "registry.v2":
        return frozenset({503})  # registry.backend is unset: a clear 503
    if route.startswith(("packages.pypi", "packages.npm")):
        return frozenset({502})  # their backends refuse connections
    return frozenset()


def check(
    seed: Seed,
    logs: Logs,
    who: str,
    target: Target | None,
    reply: Reply,
    *,
    secrets: list[bytes] | None = None,
    session: str | None = None,
) -> dict[str, object] | None:
    """Every property a fuzzed exchange must have; returns its access-log entry (None for parser-level errors).
    `session` names the user whose UI session cookie was sent, if any."""
    for failure in logs.failures:
        exc = failure.exc_info[1] if failure.exc_info else None
        raise AssertionError(f"unhandled exception logged: {failure.getMessage()}: {exc!r}")
    for secret in [*seed.secrets, MARKER.encode(), *(secrets or [])]:
        for line in logs.everything:
            assert secret.decode() not in line, f"a secret was logged: {line[:300]}"
    request_id = (reply.header(b"X-Request-Id") or b"").decode()
    entry = logs.access.get(request_id)
    if entry is None and not request_id and len(logs.access) == 1:
        # Streamed responses (git, proxied bodies) are sent before the middleware could add X-Request-Id; the
        # exchange is the only one since logs.reset(), so the one access-log entry is its own.
        entry = next(iter(logs.access.values()))
    if entry is None:
        # aiohttp refused the request before the gateway saw it (bad request line or header): a plain 4xx.
        assert 400 <= reply.status < 500, reply.raw[:300]
        return None
    route = str(entry["route"])
    assert reply.status < 500 or reply.status in allowed_5xx(route), f"{route}: {reply.raw[:500]!r}"
    for secret in [*seed.secrets, MARKER.encode(), *(secrets or [])]:
        assert secret not in reply.raw, f"{route} echoed a secret: {reply.raw[:500]!r}"
    principal = str(entry["principal"]).split("/")[0]
    expected = identity(seed, who)
    signed_in = identity(seed, session) if session else None
    allowed = ("-", "anonymous", "bad-credentials", expected, signed_in)
    assert principal in allowed, f"{who} became {principal} on {route}"
    if who == "anonymous":
        assert principal in ("-", "anonymous", signed_in), f"no credentials became {principal} on {route}"
    if session is None and got_past_authorization(route, reply.status):
        _success_allowed(seed, who, target, route, principal, reply)
    return entry


def got_past_authorization(route: str, status: int) -> bool:
    """Whether the answer shows that authorization let the request through: a success, or what only comes after
    it (git http-backend's own errors; a package backend's failure or a duplicate file)."""
    if 200 <= status < 300:
        return True
    if route.startswith("git."):
        return status not in (401, 403, 404, 405)
    return route.startswith("packages.") and status in (409, 502)


def _success_allowed(seed: Seed, who: str, target: Target | None, route: str, principal: str, reply: Reply) -> None:
    """A request that got past authorization: who may have done it."""
    base, how = split_who(who)
    family = route.split(".")[0]
    if family == "web":
        assert route in ("web.login_form", "web.static"), f"{route} answered {reply.status} without a session"
    if principal in ("-", "anonymous", "bad-credentials") and target is not None:
        action = action_of(route, target.method, target.query)  # git-upload-pack is a POST that reads
        reads = action.endswith("_read") if action else target.method in (b"GET", b"HEAD", b"OPTIONS")
        assert reads, f"anonymous {target.method!r} {route} succeeded"
    if principal.startswith("deploy_token"):
        assert family not in ("api", "web"), f"a deploy token used {route}"
    if base == "reader" and how == "" and family == "api" and target is not None:
        assert target.method in (b"GET", b"HEAD"), f"a read_api token wrote through {route}"
    if route in ADMIN_ONLY_ROUTES:
        assert base == "admin" and how == "", f"{who} used the administrator's {route}"
    if target is None or target.route.name != route:
        return  # the parameters below are those of the route the request was built from
    action = action_of(route, target.method, target.query)
    ref = target.params.get("repo") or target.params.get("id")
    if action is None or ref is None:
        return
    kind = "group" if "/groups/" in target.route.path else "project"
    resource = resource_of(seed, kind, ref)
    if resource is not None:
        assert may(who, resource, action), f"{who} was allowed {action} on {resource} via {route} ({reply.status})"
