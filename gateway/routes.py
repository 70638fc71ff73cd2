"""THE route table: every URL the gateway answers, its handler and its family. Read this first.

The family (the part of the name before the first dot) selects how errors are rendered (middleware.py).
Order matters: fixed prefixes come before the catch-all git paths.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from gateway import git_http, ops
from gateway.api import deploy_tokens, groups, members, projects, users

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str
    handler: Handler


API = "/api/v4"
# Trailing slash optional: the seed's curl examples POST to ".../deploy_tokens/".
SLASH = "{slash:/?}"
# A repository path of any depth; `.git` optional (git_http strips it). Percent-decoded once by aiohttp.
REPO = "/{repo:.+}"

ROUTES: tuple[Route, ...] = (
    # --- operations -------------------------------------------------------------------------------------------
    Route("ops.health", "GET", "/-/health", ops.health),
    Route("ops.ready", "GET", "/-/ready", ops.ready),
    # --- REST API v4: deploy tokens (seed 003) -----------------------------------------------------------------
    Route("api.deploy_tokens.all", "GET", f"{API}/deploy_tokens{SLASH}", deploy_tokens.list_all),
    Route(
        "api.project_deploy_tokens.list",
        "GET",
        f"{API}/projects/{{id}}/deploy_tokens{SLASH}",
        deploy_tokens.list_project,
    ),
    Route(
        "api.project_deploy_tokens.create",
        "POST",
        f"{API}/projects/{{id}}/deploy_tokens{SLASH}",
        deploy_tokens.create_project_token,
    ),
    Route(
        "api.project_deploy_tokens.get",
        "GET",
        f"{API}/projects/{{id}}/deploy_tokens/{{token_id}}",
        deploy_tokens.get_project_token,
    ),
    Route(
        "api.project_deploy_tokens.delete",
        "DELETE",
        f"{API}/projects/{{id}}/deploy_tokens/{{token_id}}",
        deploy_tokens.delete_project_token,
    ),
    Route(
        "api.project_deploy_tokens.revoke",
        "POST",
        f"{API}/projects/{{id}}/deploy_tokens/{{token_id}}/revoke",
        deploy_tokens.revoke_project_token,
    ),
    Route("api.group_deploy_tokens.list", "GET", f"{API}/groups/{{id}}/deploy_tokens{SLASH}", deploy_tokens.list_group),
    Route(
        "api.group_deploy_tokens.create",
        "POST",
        f"{API}/groups/{{id}}/deploy_tokens{SLASH}",
        deploy_tokens.create_group_token,
    ),
    Route(
        "api.group_deploy_tokens.get",
        "GET",
        f"{API}/groups/{{id}}/deploy_tokens/{{token_id}}",
        deploy_tokens.get_group_token,
    ),
    Route(
        "api.group_deploy_tokens.delete",
        "DELETE",
        f"{API}/groups/{{id}}/deploy_tokens/{{token_id}}",
        deploy_tokens.delete_group_token,
    ),
    Route(
        "api.group_deploy_tokens.revoke",
        "POST",
        f"{API}/groups/{{id}}/deploy_tokens/{{token_id}}/revoke",
        deploy_tokens.revoke_group_token,
    ),
    # --- REST API v4: users, groups, projects, members ---------------------------------------------------------
    Route("api.user.current", "GET", f"{API}/user", users.current),
    Route("api.users.list", "GET", f"{API}/users", users.list_users),
    Route("api.users.create", "POST", f"{API}/users", users.create),
    Route("api.users.get", "GET", f"{API}/users/{{user_id}}", users.get),
    Route("api.users.create_pat", "POST", f"{API}/users/{{user_id}}/personal_access_tokens", users.create_pat),
    Route("api.groups.list", "GET", f"{API}/groups", groups.list_groups),
    Route("api.groups.create", "POST", f"{API}/groups", groups.create),
    Route("api.groups.get", "GET", f"{API}/groups/{{id}}", groups.get),
    Route("api.groups.subgroups", "GET", f"{API}/groups/{{id}}/subgroups", groups.subgroups),
    Route("api.groups.projects", "GET", f"{API}/groups/{{id}}/projects", groups.projects),
    Route("api.projects.list", "GET", f"{API}/projects", projects.list_projects),
    Route("api.projects.create", "POST", f"{API}/projects", projects.create),
    Route("api.projects.get", "GET", f"{API}/projects/{{id}}", projects.get),
    Route("api.project_members.list", "GET", f"{API}/projects/{{id}}/members", members.list_project_members),
    Route("api.project_members.create", "POST", f"{API}/projects/{{id}}/members", members.add_project_member),
    Route("api.group_members.list", "GET", f"{API}/groups/{{id}}/members", members.list_group_members),
    Route("api.group_members.create", "POST", f"{API}/groups/{{id}}/members", members.add_group_member),
    # --- git smart HTTP (must stay last: the repository path is a catch-all) ------------------------------------
    Route("git.info_refs", "GET", f"{REPO}/info/refs", git_http.info_refs),
    Route("git.upload_pack", "POST", f"{REPO}/git-upload-pack", git_http.upload_pack),
    Route("git.receive_pack", "POST", f"{REPO}/git-receive-pack", git_http.receive_pack),
)


def install(app: web.Application) -> None:
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler, name=route.name)
