"""Settings → Repository → Deploy tokens, for projects and groups: list the active tokens, create one (its secret
shown once, in the POST response only), revoke one behind a confirmation.

The flow is the seeds' ("Creating a Deploy Token", "Revoking a deploy token"); the rules are the domain's: policy
via access.authorize, tokens.parse_scopes / parse_expires_at / validate / create, the store's revoke, as the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Literal

from aiohttp import web

from gateway import access, metrics, tokens
from gateway.app import AUDIT, CLOCK, ENCRYPTION, STORE
from gateway.errors import Forbidden, NotFound, ParamError, ValidationFailed
from gateway.namespaces import split_full_path
from gateway.policy import Allowed, Denied, Deny, Operation, Target
from gateway.store.base import DeployToken
from gateway.tokens import Holder
from gateway.web import csrf, sessions
from gateway.web.pages import NOT_FOUND, Form, href, nav, page, posted_form, text
from gateway.web.render import EMPTY, Safe, escape, html_response, join, layout, render, when

Kind = Literal["project", "group"]

# The seeds' scope table ("Limiting scopes of a deploy token"), in GitLab's order (tokens.SCOPES).
SCOPE_DESCRIPTIONS: dict[str, str] = {
    "read_repository": "Allows read-access to the repository through git clone.",
    "read_registry": (
        "Allows read-access to container registry images if a project is private and authorization is required."
    ),
    "write_registry": "Allows write-access (push) to container registry.",
    "read_package_registry": "Allows read access to the package registry.",
    "write_package_registry": "Allows write access to the package registry.",
}
NOT_CREATED = "The deploy token was not created: see the fields below."
LIST_LIMIT = 100  # active tokens shown on one page; more are counted, not listed

# (may see the project or group, may see its deploy tokens, may create and revoke them): policy's operations.
_OPERATIONS: dict[Kind, tuple[Operation, Operation, Operation]] = {
    "project": (
        Operation.READ_PROJECT,
        Operation.READ_PROJECT_DEPLOY_TOKENS,
        Operation.MANAGE_PROJECT_DEPLOY_TOKENS,
    ),
    "group": (Operation.READ_GROUP, Operation.READ_GROUP_DEPLOY_TOKENS, Operation.MANAGE_GROUP_DEPLOY_TOKENS),
}


@dataclass(frozen=True)
class Subject:
    """The project or group a settings page is about, and what the signed-in user may do there."""

    kind: Kind
    name: str
    full_path: str
    holder: Holder
    base_url: str  # "/group/project" or "/groups/group"
    can_manage: bool
    entity: tuple[str, int]  # ("Project" | "Group", id): where audit events of its tokens belong

    @property
    def settings_url(self) -> str:
        return f"{self.base_url}/-/settings/repository"

    @property
    def create_url(self) -> str:
        return f"{self.base_url}/-/settings/repository/deploy_token/create"

    def revoke_url(self, token_id: int) -> str:
        return f"{self.base_url}/-/deploy_tokens/{token_id}/revoke"


@dataclass(frozen=True)
class FormValues:
    """What the user typed into the create form, kept to show it again next to the errors."""

    name: str = ""
    expires_at: str = ""
    username: str = ""
    scopes: tuple[str, ...] = ()

    @classmethod
    def of(cls, form: Form) -> FormValues:
        scopes = tuple(v for v in form.getall("scopes", []) if isinstance(v, str))
        return cls(text(form, "name"), text(form, "expires_at").strip(), text(form, "username"), scopes)


# --- the five steps: session, principal, project or group, policy ----------------------------------------------


async def _subject(request: web.Request, session: sessions.Session, kind: Kind, *, manage: bool) -> Subject:
    store = request.app[STORE]
    segments = split_full_path(request.match_info["path"])
    if kind == "project":
        project = await store.get_project_by_path("/".join(segments)) if segments and len(segments) > 1 else None
        if project is None:
            raise NotFound(NOT_FOUND)
        target, name, full_path = Target.of_project(project), project.name, project.full_path
        holder, base_url, entity = Holder(project_id=project.id), href(project.full_path), ("Project", project.id)
    else:
        group = await store.get_namespace_by_path("/".join(segments)) if segments else None
        if group is None or group.kind != "group":
            raise NotFound(NOT_FOUND)
        target, name, full_path = Target.of_group(group), group.name, group.full_path
        holder, base_url, entity = Holder(group_id=group.id), href("groups", group.full_path), ("Group", group.id)
    see, read, manage_op = _OPERATIONS[kind]
    for op in (see, read):
        decision = await access.authorize(store, session.principal, target, op)
        if isinstance(decision, Denied):
            if decision.kind is Deny.UNAUTHENTICATED:
                raise sessions.SignInRequired()
            # GitLab answers settings pages a user may not use with 404, so they do not reveal what exists.
            raise NotFound(NOT_FOUND)
    if manage:  # the gate of a create or revoke: an audited decision
        can_manage = isinstance(await access.authorize(store, session.principal, target, manage_op), Allowed)
    else:  # whether to show the form and buttons: not a decision of its own
        can_manage = await access.visible(store, session.principal, target, manage_op)
    if manage and not can_manage:
        raise Forbidden(f"You are not allowed to create or revoke deploy tokens of this {kind}.")
    return Subject(kind, name, full_path, holder, base_url, can_manage, entity)


async def _held_token(request: web.Request, subject: Subject) -> DeployToken:
    raw = request.match_info["token_id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise NotFound(NOT_FOUND)
    token = await request.app[STORE].get_deploy_token(int(raw))
    if token is None or not subject.holder.holds(token):
        raise NotFound(NOT_FOUND)
    return token


# --- validation: the domain's functions, their messages placed next to the field they are about ---------------


def _problem(name: str, username: str | None, scopes: tuple[str, ...]) -> str | None:
    """tokens.validate's message for these values, or None when it accepts them."""
    try:
        tokens.validate(name, username, scopes)
    except ValidationFailed as exc:
        return exc.message
    return None


def check(values: FormValues, now: datetime) -> tuple[dict[str, str], tuple[str, ...], datetime | None]:
    """Field → error message, and the parsed scopes and expiry. tokens.validate is asked about one field at a
    time (the others set to values it accepts) so that each of its messages lands next to its own field."""
    errors: dict[str, str] = {}
    scopes: tuple[str, ...] = ()
    expires_at: datetime | None = None
    try:
        scopes = tokens.parse_scopes(list(values.scopes))
    except ParamError:
        errors["scopes"] = "Scopes must be chosen from the list"
    try:
        expires_at = tokens.parse_expires_at(values.expires_at)
    except ParamError:
        errors["expires_at"] = "Expiration date is invalid"
    # A token that would be expired already (tokens.is_expired, the one expiry rule) is refused, as GitLab's
    # form does with its date picker's minimum date (tomorrow, as a token expires at 00:00 UTC of its date).
    if expires_at is not None and tokens.is_expired(expires_at, now):
        errors["expires_at"] = "Expiration date must be in the future"
    valid_name, valid_scopes = "token", tokens.SCOPES
    per_field = {
        "name": _problem(values.name, None, valid_scopes),
        "username": _problem(valid_name, values.username or None, valid_scopes),
        "scopes": None if "scopes" in errors else _problem(valid_name, None, scopes),
    }
    errors.update({field: message for field, message in per_field.items() if message})
    return errors, scopes, expires_at


# --- rendering ----------------------------------------------------------------------------------------------


def _date(value: datetime) -> Safe:
    """A date, with the time only when it is not 00:00 UTC (an expiry chosen in the form is a date)."""
    value = value.astimezone(UTC)
    shown = value.strftime("%Y-%m-%d") if value.time() == time(0, 0) else value.strftime("%Y-%m-%d %H:%M UTC")
    return render("time.html", iso=value.isoformat(), shown=shown)


def _last_used(token: DeployToken) -> Safe | str:
    """When the token last authenticated (to the minute: it is written at most once a minute) and from where."""
    if token.last_used_at is None:
        return "Never"
    value = token.last_used_at.astimezone(UTC)
    when_used = render("time.html", iso=value.isoformat(), shown=value.strftime("%Y-%m-%d %H:%M UTC"))
    if not token.last_used_ips:
        return when_used
    return render("last_used.html", time=when_used, ips=", ".join(token.last_used_ips))


def _field_error(field: str, errors: dict[str, str]) -> Safe:
    message = errors.get(field)
    return when(message, render("field_error.html", id=f"deploy_token_{field}_error", message=message))


def _invalid_attrs(field: str, errors: dict[str, str]) -> Safe:
    if field not in errors:
        return EMPTY
    return Safe(f' aria-invalid="true" aria-describedby="deploy_token_{field}_error"')


def _form(
    subject: Subject, session: sessions.Session, values: FormValues, errors: dict[str, str], now: datetime
) -> Safe:
    options = [
        render(
            "scope_option.html",
            scope=scope,
            description=description,
            checked=when(scope in values.scopes, Safe(" checked")),
        )
        for scope, description in SCOPE_DESCRIPTIONS.items()
    ]
    return render(
        "token_form.html",
        action=subject.create_url,
        csrf_field=csrf.FIELD,
        csrf_token=session.csrf_token,
        name=values.name,
        expires_at=values.expires_at,
        username=values.username,
        min_date=(now + timedelta(days=1)).date().isoformat(),
        name_attrs=_invalid_attrs("name", errors),
        expires_at_attrs=_invalid_attrs("expires_at", errors),
        username_attrs=_invalid_attrs("username", errors),
        scopes_class=" invalid" if "scopes" in errors else "",
        name_error=_field_error("name", errors),
        expires_at_error=_field_error("expires_at", errors),
        username_error=_field_error("username", errors),
        scopes_error=_field_error("scopes", errors),
        scope_options=join(options),
        summary=when(errors, render("alert.html", kind="danger", message=NOT_CREATED)),
    )


def _table(subject: Subject, session: sessions.Session, active: list[DeployToken], total: int) -> Safe:
    if not active:
        return render("tokens_empty.html", kind=subject.kind)
    rows = [
        render(
            "token_row.html",
            name=token.name,
            username=token.username,
            created=_date(token.created_at),
            expires=_date(token.expires_at) if token.expires_at else "Never",
            last_used=_last_used(token),
            scopes=join((render("scope_badge.html", scope=s) for s in token.scopes), " "),
            action=when(
                subject.can_manage,
                render(
                    "revoke_button.html",
                    action=subject.revoke_url(token.id),
                    csrf_field=csrf.FIELD,
                    csrf_token=session.csrf_token,
                    confirm=f"Are you sure you want to revoke the deploy token “{token.name}”? This cannot be undone.",
                    name=token.name,
                ),
            ),
        )
        for token in active
    ]
    more = f"Showing the first {len(active)} of {total} active deploy tokens." if total > len(active) else ""
    return render(
        "tokens_table.html",
        rows=join(rows),
        action_header=when(subject.can_manage, Safe('<th scope="col"><span class="sr-only">Actions</span></th>')),
        more=when(more, render("alert.html", kind="info", message=more)),
    )


async def _settings(
    request: web.Request,
    session: sessions.Session,
    subject: Subject,
    *,
    values: FormValues | None = None,
    errors: dict[str, str] | None = None,
    created: tokens.Created | None = None,
    notice: str = "",
    status: int = 200,
) -> web.Response:
    now = request.app[CLOCK].now()
    listed = await request.app[STORE].list_deploy_tokens(
        project_id=subject.holder.project_id,
        group_id=subject.holder.group_id,
        active_at=now,
        limit=LIST_LIMIT,
    )
    if subject.can_manage:
        form = _form(subject, session, values or FormValues(), errors or {}, now)
    else:  # a group's Maintainer: sees the tokens, but creating and revoking them is for Owners (policy)
        form = render(
            "alert.html",
            kind="info",
            message=f"You can view the deploy tokens of this {subject.kind}; "
            "creating and revoking them needs a higher role (group Owner).",
        )
    content = render(
        "settings.html",
        kind=subject.kind,
        name=subject.name,
        full_path=subject.full_path,
        settings_url=subject.settings_url,
        created=render("token_created.html", username=created.token.username, token=created.secret) if created else "",
        notice=when(notice, render("alert.html", kind="success", message=notice)),
        form=form,
        count=listed.total,
        table=_table(subject, session, listed.items, listed.total),
    )
    # After showing a new token, the script swaps the history entry for the plain settings page, so a reload
    # fetches that page (the token gone) instead of posting the form again.
    body_attrs = Safe(f' data-replace-url="{escape(subject.settings_url)}"') if created else EMPTY
    title = f"Repository settings · {subject.full_path}"
    return html_response(layout(title, content, nav=nav(session), body_attrs=body_attrs), status=status)


def _holder(subject: Subject) -> tuple[str, int, str]:
    return (*subject.entity, subject.full_path)


# --- handlers -----------------------------------------------------------------------------------------------


async def _show(request: web.Request, kind: Kind) -> web.StreamResponse:
    session = await sessions.require(request)
    subject = await _subject(request, session, kind, manage=False)
    notice = ""
    revoked_id = request.query.get("revoked", "")
    if revoked_id.isascii() and revoked_id.isdigit() and len(revoked_id) <= 18:
        token = await request.app[STORE].get_deploy_token(int(revoked_id))
        if token is not None and subject.holder.holds(token) and token.revoked:
            notice = f"The deploy token “{token.name}” has been revoked."
    return await _settings(request, session, subject, notice=notice)


async def _create(request: web.Request, kind: Kind) -> web.StreamResponse:
    session = await sessions.require(request)
    form = await posted_form(request, session)
    subject = await _subject(request, session, kind, manage=True)
    values = FormValues.of(form)
    now = request.app[CLOCK].now()
    errors, scopes, expires_at = check(values, now)
    if errors:
        return await _settings(request, session, subject, values=values, errors=errors, status=422)
    created = await tokens.create(
        request.app[STORE],
        request.app[ENCRYPTION].current,
        holder=subject.holder,
        name=values.name,
        username=values.username or None,
        scopes=scopes,
        expires_at=expires_at,
        creator_id=session.user.id,
        now=now,
    )
    metrics.token_issued("deploy_token")
    audit_log = request.app[AUDIT]
    await audit_log.deploy_token_changed(request, session.principal, _holder(subject), "created", created.token)
    # The secret goes into this response only: never a redirect URL, a log line, or anything kept for later.
    return await _settings(request, session, subject, created=created)


async def _revoke(request: web.Request, kind: Kind) -> web.StreamResponse:
    session = await sessions.require(request)
    form = await posted_form(request, session)
    subject = await _subject(request, session, kind, manage=True)
    token = await _held_token(request, subject)
    if text(form, "confirmed") != "yes":  # without JavaScript the confirmation is this page
        content = render(
            "revoke_confirm.html",
            action=subject.revoke_url(token.id),
            csrf_field=csrf.FIELD,
            csrf_token=session.csrf_token,
            name=token.name,
            username=token.username,
            kind=subject.kind,
            full_path=subject.full_path,
            cancel_url=subject.settings_url,
        )
        return html_response(layout("Revoke deploy token", content, nav=nav(session)))
    if not token.revoked and await request.app[STORE].revoke_deploy_token(token.id):
        await request.app[AUDIT].deploy_token_changed(request, session.principal, _holder(subject), "revoked", token)
    return web.Response(status=303, headers={"Location": f"{subject.settings_url}?revoked={token.id}"})


@page
async def project_settings(request: web.Request) -> web.StreamResponse:
    return await _show(request, "project")


@page
async def project_create(request: web.Request) -> web.StreamResponse:
    return await _create(request, "project")


@page
async def project_revoke(request: web.Request) -> web.StreamResponse:
    return await _revoke(request, "project")


@page
async def group_settings(request: web.Request) -> web.StreamResponse:
    return await _show(request, "group")


@page
async def group_create(request: web.Request) -> web.StreamResponse:
    return await _create(request, "group")


@page
async def group_revoke(request: web.Request) -> web.StreamResponse:
    return await _revoke(request, "group")
