"""git smart HTTP: info/refs, git-upload-pack and git-receive-pack, authorized per project, then served by the
embedded `git http-backend` (CGI) or forwarded to an upstream smart-HTTP server through proxy.py.

Responses follow GitLab's git_http_client_controller.rb (gitlab-behaviour.md §5.2); what git sends is in
shared/notes/git.md.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from aiohttp import hdrs, web
from multidict import CIMultiDict

from gateway import access, authn, cgi, principals, repositories
from gateway.app import CONFIG, GIT_SLOTS, PROXY, STORE
from gateway.config import Config
from gateway.errors import BadGateway, Forbidden, NotFound, Unauthorized
from gateway.middleware import GIT_UNAUTHORIZED, PRINCIPAL
from gateway.namespaces import split_full_path
from gateway.policy import Denied, Deny, Operation, Target
from gateway.principals import Anonymous, DeployTokenPrincipal, Principal, UserPrincipal
from gateway.proxy import CHUNK, Timeouts, basic_authorization, body_is_raw
from gateway.store.base import Project
from gateway.tokens import PACKAGE_SCOPES

log = logging.getLogger("gateway.git")

SERVICES = {"git-upload-pack": Operation.GIT_READ, "git-receive-pack": Operation.GIT_WRITE}
NOT_FOUND = "The project you were looking for could not be found or you don't have permission to view it."
# gitlab-workhorse (internal/git/info-refs.go) answers a pre-authorized dumb-protocol request with 403.
DUMB_REFUSED = "The dumb Git HTTP protocol is not supported; use a git client with smart HTTP (git >= 1.6.6)."
# `version=2` or `version=2:object-format=sha256`: what git puts in Git-Protocol (gitprotocol-v2 "HTTP Transport").
_GIT_PROTOCOL_RE = re.compile(r"\A[A-Za-z0-9=:._-]{1,256}\Z")


@dataclass(frozen=True)
class Grant:
    """An authorized git request: who asked and which project it is about."""

    principal: Principal
    project: Project


def project_path(raw: str) -> str | None:
    """The project's full path from the decoded URL path (`.git` optional), or None if it can name nothing."""
    if raw.lower().endswith(".git"):
        raw = raw[:-4]
    segments = split_full_path(raw)
    if segments is None or len(segments) < 2:
        return None
    return "/".join(segments)


async def authorize(request: web.Request, op: Operation) -> Grant:
    """credentials → principal → project → policy, in that order; every refusal is the response git expects."""
    app = request.app
    store = app[STORE]
    principal = await authn.authenticate(request, principals.Mode.LOGIN)
    if principal is None:
        request[PRINCIPAL] = "bad-credentials"
        raise Unauthorized(GIT_UNAUTHORIZED)
    request[PRINCIPAL] = principals.describe(principal)
    anonymous = isinstance(principal, Anonymous)
    if isinstance(principal, DeployTokenPrincipal) and set(principal.token.scopes) <= PACKAGE_SCOPES:
        # A token holding only package scopes cannot log in to git at all (auth.rb abilities_for_scopes).
        raise Unauthorized(GIT_UNAUTHORIZED)
    full_path = project_path(request.match_info.get("repo", ""))
    project = await store.get_project_by_path(full_path) if full_path else None
    if project is None:
        # Anonymous: challenge, or git never sends its credentials (git.md §1). Signed in: GitLab's 404.
        raise Unauthorized(GIT_UNAUTHORIZED) if anonymous else NotFound(NOT_FOUND)
    decision = await access.authorize(store, principal, Target.of_project(project), op)
    if isinstance(decision, Denied):
        # Every git command starts with an anonymous probe (git.md §1): that one is routine, not worth an info line.
        log.log(
            logging.DEBUG if anonymous else logging.INFO,
            "git %s denied: %s on project %s: %s",
            op.value,
            request[PRINCIPAL],
            project.id,
            decision.reason,
        )
        if decision.kind is Deny.UNAUTHENTICATED or anonymous:
            raise Unauthorized(GIT_UNAUTHORIZED)
        if decision.kind is Deny.FORBIDDEN:
            raise Forbidden(decision.reason)
        raise NotFound(NOT_FOUND)
    return Grant(principal, project)


async def info_refs(request: web.Request) -> web.StreamResponse:
    service = request.query.get("service", "")
    op = SERVICES.get(service)
    if op is None:
        await authorize(request, Operation.GIT_READ)
        raise Forbidden(DUMB_REFUSED)
    grant = await authorize(request, op)
    return await serve(request, grant, "info/refs", service)


async def upload_pack(request: web.Request) -> web.StreamResponse:
    grant = await authorize(request, Operation.GIT_READ)
    return await serve(request, grant, "git-upload-pack", None)


async def receive_pack(request: web.Request) -> web.StreamResponse:
    grant = await authorize(request, Operation.GIT_WRITE)
    return await serve(request, grant, "git-receive-pack", None)


async def serve(request: web.Request, grant: Grant, suffix: str, service: str | None) -> web.StreamResponse:
    config = request.app[CONFIG]
    if config.git.backend == "embedded":
        return await _embedded(request, config, grant, suffix, service)
    return await _upstream(request, config, grant, suffix, service)


# --- embedded backend: git http-backend as CGI -------------------------------------------------------------------

_exec_path: str | None = None


async def http_backend() -> str:
    """The git-http-backend program (`git --exec-path`), run directly: `git http-backend` would fork once more."""
    global _exec_path
    if _exec_path is None:
        try:
            proc = await asyncio.create_subprocess_exec(
                "git",
                "--exec-path",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                stdin=asyncio.subprocess.DEVNULL,
            )
        except OSError:
            log.error("git is not installed or not on PATH: the embedded git backend cannot run")
            raise BadGateway("502 Bad Gateway: the git backend is not available") from None
        out, _ = await proc.communicate()
        program = Path(out.decode().strip()) / "git-http-backend"
        if proc.returncode != 0 or not program.is_file():
            log.error("git-http-backend not found (git --exec-path gave %r)", out)
            raise BadGateway("502 Bad Gateway: the git backend is not available")
        _exec_path = str(program)
    return _exec_path


def principal_name(principal: Principal) -> str | None:
    """REMOTE_USER: http-backend refuses receive-pack without one (git.md §3); also written to its logs."""
    if isinstance(principal, UserPrincipal):
        return principal.user.username
    if isinstance(principal, DeployTokenPrincipal):
        return principal.token.username
    return None


def cgi_env(
    request: web.Request, root: Path, repo_dir: Path, suffix: str, service: str | None, grant: Grant, raw_body: bool
) -> dict[str, str]:
    """RFC 3875 variables plus what git http-backend needs (git.md §3). Only validated values go in."""
    env = repositories.git_env(*repositories.SERVING_CONFIG)
    env.update(
        {
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": f"HTTP/{request.version.major}.{request.version.minor}",
            "SERVER_SOFTWARE": "deploy-token-gateway",
            "REQUEST_METHOD": request.method,
            "REMOTE_ADDR": request.remote or "",
            "GIT_PROJECT_ROOT": str(root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": f"/{repo_dir.relative_to(root).as_posix()}/{suffix}",
            # Rebuilt, never the client's query string (it may carry tokens and anything else).
            "QUERY_STRING": f"service={service}" if service else "",
        }
    )
    content_type = request.headers.get(hdrs.CONTENT_TYPE)
    if content_type:
        env["CONTENT_TYPE"] = content_type
    length = request.headers.get(hdrs.CONTENT_LENGTH)
    encoding = request.headers.get(hdrs.CONTENT_ENCODING)
    if raw_body:
        # The body reaches http-backend untouched; it inflates gzip itself. Chunked bodies have no length:
        # http-backend then reads to EOF (git.md §2).
        if length and length.isdigit():
            env["CONTENT_LENGTH"] = length
        if encoding:
            env["HTTP_CONTENT_ENCODING"] = encoding
    protocol = request.headers.get("Git-Protocol", "")
    if _GIT_PROTOCOL_RE.match(protocol):
        # Protocol v2 is negotiated by this header; without it http-backend speaks v0 (git.md §2).
        env["GIT_PROTOCOL"] = protocol
    user = principal_name(grant.principal)
    if user:
        env["REMOTE_USER"] = user
    return env


async def _embedded(
    request: web.Request, config: Config, grant: Grant, suffix: str, service: str | None
) -> web.StreamResponse:
    repo_dir = repositories.locate(config, grant.project.full_path)
    if repo_dir is None:
        log.error("project %s has a path outside the repositories root", grant.project.id)
        raise NotFound(NOT_FOUND)
    if not (repo_dir / "HEAD").is_file():
        # Every GitLab project has a repository (possibly empty): create a missing one on first use.
        await repositories.create_bare(config, grant.project.full_path)
    first = await request.content.read(CHUNK) if request.body_exists else b""
    env = cgi_env(
        request,
        repositories.root(config),
        repo_dir,
        suffix,
        service,
        grant,
        body_is_raw(request.headers, first),
    )
    program = await http_backend()
    return await cgi.run(
        request, [program], env, first=first, slots=request.app[GIT_SLOTS], idle_timeout=config.git.timeout
    )


# --- upstream backend: an existing smart-HTTP server ---------------------------------------------------------------


def _refuse_backend_challenge(status: int, headers: CIMultiDict[str]) -> None:
    """A backend 401 is about the gateway's own credentials: passing it on would make git retry in a loop."""
    if status in (401, 407):
        log.error("git backend answered %s: check git.backend_username / git.backend_password", status)
        raise BadGateway("502 Bad Gateway: the git backend refused the gateway's credentials")


async def _upstream(
    request: web.Request, config: Config, grant: Grant, suffix: str, service: str | None
) -> web.StreamResponse:
    base = config.git.backend.rstrip("/")
    # The canonical path from the store (any case the client used resolves to it); segments are [A-Za-z0-9_.-].
    url = f"{base}/{grant.project.full_path}.git/{suffix}" + (f"?service={service}" if service else "")
    authorization = None
    if config.git.backend_username or config.git.backend_password:
        authorization = basic_authorization(config.git.backend_username, config.git.backend_password)
    return await request.app[PROXY].forward(
        request,
        url,
        backend="git",
        authorization=authorization,
        timeouts=Timeouts(read=config.git.timeout),
        on_headers=_refuse_backend_challenge,
        # The pack stream: hundreds of MB that nginx would otherwise send in HTTP chunks of a few KB (fastcgi buffers).
        unframed=suffix == "git-upload-pack",
    )
