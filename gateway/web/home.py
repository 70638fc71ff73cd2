"""The landing page: the projects and groups whose deploy tokens the signed-in user may see, with links to their
Settings → Repository pages. Policy decides for each one, through access.authorize as everywhere else."""

from __future__ import annotations

from aiohttp import web

from gateway import access
from gateway.app import STORE
from gateway.policy import Operation, Target
from gateway.store.base import Namespace, Project, Store
from gateway.web import sessions
from gateway.web.pages import href, nav, page
from gateway.web.render import Safe, html_response, join, layout, render


def project_settings_url(project: Project) -> str:
    return href(project.full_path, "-", "settings", "repository")


def group_settings_url(group: Namespace) -> str:
    return href("groups", group.full_path, "-", "settings", "repository")


async def _candidates(store: Store, session: sessions.Session) -> tuple[list[Project], list[Namespace]]:
    """Projects and groups where the user could possibly hold Maintainer: an administrator's are all of them,
    anyone else's are those under one of their memberships or in their personal namespace. This only narrows
    what is asked of policy (visibility never grants Maintainer); policy still decides each one."""
    if session.user.is_admin:
        return await store.list_projects(), await store.list_groups()
    return await access.within_reach(store, session.user)


async def _may(levels: access.Levels, session: sessions.Session, target: Target, op: Operation) -> bool:
    return await access.visible(levels, session.principal, target, op)  # a list filter, not an audited decision


@page
async def landing(request: web.Request) -> web.StreamResponse:
    session = await sessions.require(request)
    store = request.app[STORE]
    projects, groups = await _candidates(store, session)
    levels = await access.for_list(store, session.principal)
    project_rows: list[Safe] = []
    for project in projects:
        target = Target.of_project(project)
        if await _may(levels, session, target, Operation.READ_PROJECT_DEPLOY_TOKENS):
            manage = await _may(levels, session, target, Operation.MANAGE_PROJECT_DEPLOY_TOKENS)
            project_rows.append(
                render(
                    "landing_item.html",
                    url=project_settings_url(project),
                    name=project.name,
                    full_path=project.full_path,
                    access="View and manage deploy tokens" if manage else "View deploy tokens",
                )
            )
    group_rows: list[Safe] = []
    for group in groups:
        target = Target.of_group(group)
        if await _may(levels, session, target, Operation.READ_GROUP_DEPLOY_TOKENS):
            manage = await _may(levels, session, target, Operation.MANAGE_GROUP_DEPLOY_TOKENS)
            group_rows.append(
                render(
                    "landing_item.html",
                    url=group_settings_url(group),
                    name=group.name,
                    full_path=group.full_path,
                    access="View and manage deploy tokens" if manage else "View deploy tokens",
                )
            )
    empty = render("landing_empty.html")
    content = render(
        "landing.html",
        username=session.user.name or session.user.username,
        projects=join(project_rows) if project_rows else empty,
        groups=join(group_rows) if group_rows else empty,
        project_count=len(project_rows),
        group_count=len(group_rows),
    )
    return html_response(layout("Your projects and groups", content, nav=nav(session)))
