"""THE route table: every URL the gateway answers, its handler and its family. Read this first.

The family (the part of the name before the first dot) selects how errors are rendered (middleware.py).
Order matters: fixed prefixes come before the catch-all git paths.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from gateway import git_http, ops, packages_http, registry_auth, registry_proxy
from gateway.api import audit_events, deploy_tokens, groups, members, projects, users
from gateway.web import assets, auth, home
from gateway.web import deploy_tokens as web_deploy_tokens

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
# Package registries at GitLab's URLs (docs/packages.md); group-level endpoints sit under the group's `/-/`.
PKG = f"{API}/projects/{{id}}/packages"
GROUP_PKG = f"{API}/groups/{{id}}/-/packages"
# UI pages of a project or group (GitLab's URLs: /group/project/-/settings/..., /groups/group/-/settings/...).
WEB_PROJECT = "/{path:.+}"
WEB_GROUP = "/groups/{path:.+}"

ROUTES: tuple[Route, ...] = (
    # --- operations -------------------------------------------------------------------------------------------
    Route("ops.health", "GET", "/-/health", ops.health),
    Route("ops.ready", "GET", "/-/ready", ops.ready),
    Route("ops.metrics", "GET", "/-/metrics", ops.metrics),
    # --- registry token service (Docker token auth spec; GitLab's JwtController) ------------------------------
    Route("registry_auth.token", "GET", "/jwt/auth", registry_auth.token),
    Route("registry_auth.oauth", "POST", "/jwt/auth", registry_auth.oauth),
    # --- registry: everything under /v2/ goes to the distribution registry (it checks our JWTs) -------------------
    Route("registry.v2", "*", "/v2{tail:(/.*)?}", registry_proxy.forward),
    # --- package registries: PyPI, npm, Maven, generic (before the API and git catch-alls) ----------------------
    Route("packages.pypi.upload", "POST", f"{PKG}/pypi{SLASH}", packages_http.pypi_upload),
    Route("packages.pypi.index", "GET", f"{PKG}/pypi/simple{SLASH}", packages_http.pypi_index),
    Route("packages.pypi.package", "GET", f"{PKG}/pypi/simple/{{name}}{SLASH}", packages_http.pypi_package),
    Route("packages.pypi.file", "GET", f"{PKG}/pypi/files/{{sha256}}/{{path:.+}}", packages_http.pypi_file),
    Route("packages.pypi.file_head", "HEAD", f"{PKG}/pypi/files/{{sha256}}/{{path:.+}}", packages_http.pypi_file),
    Route("packages.pypi.group_index", "GET", f"{GROUP_PKG}/pypi/simple{SLASH}", packages_http.pypi_group_index),
    Route(
        "packages.pypi.group_package",
        "GET",
        f"{GROUP_PKG}/pypi/simple/{{name}}{SLASH}",
        packages_http.pypi_group_package,
    ),
    Route("packages.npm.get", "GET", f"{PKG}/npm/{{path:.+}}", packages_http.npm_get),
    Route("packages.npm.head", "HEAD", f"{PKG}/npm/{{path:.+}}", packages_http.npm_get),
    Route("packages.npm.put", "PUT", f"{PKG}/npm/{{path:.+}}", packages_http.npm_put),
    Route("packages.maven.get", "GET", f"{PKG}/maven/{{path:.+}}", packages_http.maven_get),
    Route("packages.maven.head", "HEAD", f"{PKG}/maven/{{path:.+}}", packages_http.maven_get),
    Route("packages.maven.put", "PUT", f"{PKG}/maven/{{path:.+}}", packages_http.maven_put),
    Route("packages.maven.group_get", "GET", f"{GROUP_PKG}/maven/{{path:.+}}", packages_http.maven_group_get),
    Route("packages.maven.group_head", "HEAD", f"{GROUP_PKG}/maven/{{path:.+}}", packages_http.maven_group_get),
    Route("packages.generic.get", "GET", f"{PKG}/generic/{{name}}/{{version}}/{{file}}", packages_http.generic_get),
    Route("packages.generic.head", "HEAD", f"{PKG}/generic/{{name}}/{{version}}/{{file}}", packages_http.generic_get),
    Route("packages.generic.put", "PUT", f"{PKG}/generic/{{name}}/{{version}}/{{file}}", packages_http.generic_put),
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
    Route("api.personal_access_tokens.list", "GET", f"{API}/personal_access_tokens", users.list_pats),
    Route("api.personal_access_tokens.self", "GET", f"{API}/personal_access_tokens/self", users.current_pat),
    # Before the {token_id} route: "self" is not an id.
    Route(
        "api.personal_access_tokens.revoke_self",
        "DELETE",
        f"{API}/personal_access_tokens/self",
        users.revoke_current_pat,
    ),
    Route(
        "api.personal_access_tokens.revoke",
        "DELETE",
        f"{API}/personal_access_tokens/{{token_id}}",
        users.revoke_pat,
    ),
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
    # --- REST API v4: audit events (GitLab's audit events API; gateway/audit.py records them) --------------------
    Route("api.audit_events.list", "GET", f"{API}/audit_events", audit_events.list_instance),
    Route("api.audit_events.get", "GET", f"{API}/audit_events/{{event_id}}", audit_events.get_instance),
    Route("api.group_audit_events.list", "GET", f"{API}/groups/{{id}}/audit_events", audit_events.list_group),
    Route(
        "api.group_audit_events.get",
        "GET",
        f"{API}/groups/{{id}}/audit_events/{{event_id}}",
        audit_events.get_group,
    ),
    Route("api.project_audit_events.list", "GET", f"{API}/projects/{{id}}/audit_events", audit_events.list_project),
    Route(
        "api.project_audit_events.get",
        "GET",
        f"{API}/projects/{{id}}/audit_events/{{event_id}}",
        audit_events.get_project,
    ),
    # --- web UI (web/): session cookie + CSRF; GitLab's URLs. Group pages before project pages: `{path:.+}` would
    # also match "groups/<group>" (a path no project can have: `groups` is reserved) ------------------------------
    Route("web.static", "GET", "/-/static/{name}", assets.static),
    Route("web.home", "GET", "/", home.landing),
    Route("web.login_form", "GET", "/-/login", auth.login_form),
    Route("web.login", "POST", "/-/login", auth.login),
    Route("web.logout", "POST", "/-/logout", auth.logout),
    Route("web.group_settings", "GET", f"{WEB_GROUP}/-/settings/repository", web_deploy_tokens.group_settings),
    Route(
        "web.group_deploy_tokens.create",
        "POST",
        f"{WEB_GROUP}/-/settings/repository/deploy_token/create",
        web_deploy_tokens.group_create,
    ),
    Route(
        "web.group_deploy_tokens.revoke",
        "POST",
        f"{WEB_GROUP}/-/deploy_tokens/{{token_id}}/revoke",
        web_deploy_tokens.group_revoke,
    ),
    Route("web.project_settings", "GET", f"{WEB_PROJECT}/-/settings/repository", web_deploy_tokens.project_settings),
    Route(
        "web.project_deploy_tokens.create",
        "POST",
        f"{WEB_PROJECT}/-/settings/repository/deploy_token/create",
        web_deploy_tokens.project_create,
    ),
    Route(
        "web.project_deploy_tokens.revoke",
        "POST",
        f"{WEB_PROJECT}/-/deploy_tokens/{{token_id}}/revoke",
        web_deploy_tokens.project_revoke,
    ),
    # --- git smart HTTP (must stay last: the repository path is a catch-all) ------------------------------------
    Route("git.info_refs", "GET", f"{REPO}/info/refs", git_http.info_refs),
    Route("git.upload_pack", "POST", f"{REPO}/git-upload-pack", git_http.upload_pack),
    Route("git.receive_pack", "POST", f"{REPO}/git-receive-pack", git_http.receive_pack),
)


def install(app: web.Application) -> None:
    for route in ROUTES:
        if route.method == "GET" and route.name.startswith("api."):
            # Grape answers HEAD on every GET route (GitLab's API lets read_api tokens use it): headers only.
            app.router.add_get(route.path, route.handler, name=route.name, allow_head=True)
        else:
            app.router.add_route(route.method, route.path, route.handler, name=route.name)
