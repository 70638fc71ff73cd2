"""The landing page: the projects and groups whose deploy tokens the signed-in user may see, with links to their
Settings → Repository pages, selected in the database from policy's reach (access.list_scope)."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from aiohttp import web

from gateway import access
from gateway.app import STORE
from gateway.policy import Operation, Target
from gateway.store.base import COUNT_LIMIT, Listing, Namespace, Project
from gateway.web import sessions
from gateway.web.pages import href, nav, page
from gateway.web.render import EMPTY, Safe, html_response, join, layout, render

LIST_LIMIT = 100  # projects and groups shown; more are counted, not listed
MAX_SEARCH = 255  # the longest name or path
MANAGE_PROJECT = Operation.MANAGE_PROJECT_DEPLOY_TOKENS
MANAGE_GROUP = Operation.MANAGE_GROUP_DEPLOY_TOKENS


def project_settings_url(project: Project) -> str:
    return href(project.full_path, "-", "settings", "repository")


def group_settings_url(group: Namespace) -> str:
    return href("groups", group.full_path, "-", "settings", "repository")


def _scope(session: sessions.Session, kind: Literal["project", "group"], op: Operation, search: str) -> Listing:
    """Where `op` is allowed, by name: selected in the database from policy's reach (an administrator's is every
    project of the instance, so the page shows the first LIST_LIMIT, counts the rest and offers a filter)."""
    return replace(access.list_scope(session.principal, kind, op), order_by="name", search=search)


async def _row(
    levels: access.Levels, session: sessions.Session, item: Project | Namespace, target: Target, url: str, op: Operation
) -> Safe:
    manage = await access.visible(levels, session.principal, target, op)  # a list filter, not an audited decision
    return render(
        "landing_item.html",
        url=url,
        name=item.name,
        full_path=item.full_path,
        access="View and manage deploy tokens" if manage else "View deploy tokens",
    )


def _more(shown: int, total: int, what: str) -> Safe:
    if total <= shown:
        return EMPTY
    counted = f"{total:,}" if total <= COUNT_LIMIT else f"more than {COUNT_LIMIT:,}"
    message = f"Showing the first {shown} of {counted} {what}, by name: filter to find the others."
    return render("alert.html", kind="info", message=message)


@page
async def landing(request: web.Request) -> web.StreamResponse:
    session = await sessions.require(request)
    store = request.app[STORE]
    search = request.query.get("search", "").strip()[:MAX_SEARCH]
    # Maintainer or more: visibility never opens these, so a user's lists are their memberships' reach.
    projects = await store.page_projects(
        _scope(session, "project", Operation.READ_PROJECT_DEPLOY_TOKENS, search), offset=0, limit=LIST_LIMIT
    )
    groups = await store.page_groups(
        _scope(session, "group", Operation.READ_GROUP_DEPLOY_TOKENS, search), offset=0, limit=LIST_LIMIT
    )
    levels = await access.for_list(store, session.principal)
    project_rows = [
        await _row(levels, session, p, Target.of_project(p), project_settings_url(p), MANAGE_PROJECT)
        for p in projects.items
    ]
    group_rows = [
        await _row(levels, session, g, Target.of_group(g), group_settings_url(g), MANAGE_GROUP) for g in groups.items
    ]
    empty = render(
        "landing_empty.html",
        message=f"Nothing matches “{search}”."
        if search
        else "None: you need the Maintainer role (or Owner, for groups) to manage deploy tokens.",
    )
    content = render(
        "landing.html",
        username=session.user.name or session.user.username,
        search=search,
        projects=join(project_rows) if project_rows else empty,
        groups=join(group_rows) if group_rows else empty,
        project_count=_count(projects.total),
        group_count=_count(groups.total),
        projects_more=_more(len(project_rows), projects.total, "projects"),
        groups_more=_more(len(group_rows), groups.total, "groups"),
    )
    return html_response(layout("Your projects and groups", content, nav=nav(session)))


def _count(total: int) -> str:
    return f"{total:,}" if total <= COUNT_LIMIT else f"{COUNT_LIMIT:,}+"
