"""JSON entities in GitLab's field order (lib/api/entities/*.rb)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.app import CONFIG
from gateway.clients import CLIENTS
from gateway.store.base import DeployToken, Member, Namespace, PersonalAccessToken, Project, User
from gateway.tokens import is_expired


def iso(value: datetime | None) -> str | None:
    """GitLab's API timestamps: UTC with milliseconds and a Z (2020-02-14T00:00:00.000Z)."""
    if value is None:
        return None
    v = value.astimezone(UTC)
    millis = v.microsecond // 1000
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{millis:03d}Z"


def iso_date(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).date().isoformat()


def base_url(request: web.Request) -> str:
    """The public origin: server.external_url, else what the client used to reach us (through trusted proxies)."""
    configured = request.app[CONFIG].server.external_url
    return configured.rstrip("/") if configured else request.app[CLIENTS].origin(request)


def deploy_token(token: DeployToken, now: datetime, secret: str | None = None) -> dict[str, Any]:
    """DeployToken entity: id, name, username, expires_at, scopes, revoked, expired (+ token on create); then this
    gateway's own last_used_at and last_used_ips (named as on GitLab's personal access tokens)."""
    entity: dict[str, Any] = {
        "id": token.id,
        "name": token.name,
        "username": token.username,
        "expires_at": iso(token.expires_at),
        "scopes": list(token.scopes),
        "revoked": token.revoked,
        "expired": is_expired(token.expires_at, now),
    }
    if secret is not None:
        entity["token"] = secret
    entity["last_used_at"] = iso(token.last_used_at)
    entity["last_used_ips"] = list(token.last_used_ips)
    return entity


def user_basic(user: User, base: str) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "name": user.name,
        "state": user.state,
        "locked": False,
        "avatar_url": None,
        "web_url": f"{base}/{user.username}",
    }


def user_full(user: User, base: str, *, with_private: bool) -> dict[str, Any]:
    entity = {
        **user_basic(user, base),
        "created_at": iso(user.created_at),
        "bio": "",
        "public_email": None,
        "bot": False,
    }
    if with_private:
        entity.update({"email": user.email, "is_admin": user.is_admin, "namespace_id": user.namespace_id})
    return entity


def namespace_basic(ns: Namespace, base: str) -> dict[str, Any]:
    return {
        "id": ns.id,
        "name": ns.name,
        "path": ns.path,
        "kind": ns.kind,
        "full_path": ns.full_path,
        "parent_id": ns.parent_id,
        "avatar_url": None,
        "web_url": f"{base}/groups/{ns.full_path}" if ns.kind == "group" else f"{base}/{ns.full_path}",
    }


def group(ns: Namespace, base: str, full_name: str | None = None) -> dict[str, Any]:
    return {
        "id": ns.id,
        "web_url": f"{base}/groups/{ns.full_path}",
        "name": ns.name,
        "path": ns.path,
        "description": ns.description,
        "visibility": ns.visibility,
        "share_with_group_lock": False,
        "require_two_factor_authentication": False,
        "project_creation_level": "developer",
        "subgroup_creation_level": "maintainer",
        "full_name": full_name or ns.name,
        "full_path": ns.full_path,
        "created_at": iso(ns.created_at),
        "parent_id": ns.parent_id,
    }


def project(p: Project, base: str, namespace_full_name: str | None = None) -> dict[str, Any]:
    ns_name = namespace_full_name or p.namespace.name
    return {
        "id": p.id,
        "description": p.description,
        "name": p.name,
        "name_with_namespace": f"{ns_name} / {p.name}",
        "path": p.path,
        "path_with_namespace": p.full_path,
        "created_at": iso(p.created_at),
        "default_branch": "main",
        "tag_list": [],
        "topics": [],
        "ssh_url_to_repo": None,
        "http_url_to_repo": f"{base}/{p.full_path}.git",
        "web_url": f"{base}/{p.full_path}",
        "readme_url": None,
        "avatar_url": None,
        "namespace": namespace_basic(p.namespace, base),
        "visibility": p.visibility,
        "creator_id": p.creator_id,
    }


def member(m: Member, base: str) -> dict[str, Any]:
    return {
        **user_basic(m.user, base),
        "created_at": iso(m.created_at),
        "expires_at": None,
        "access_level": m.access_level,
    }


def personal_access_token(t: PersonalAccessToken, now: datetime, secret: str | None = None) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "id": t.id,
        "name": t.name,
        "revoked": t.revoked,
        "created_at": iso(t.created_at),
        "scopes": list(t.scopes),
        "user_id": t.user_id,
        "last_used_at": iso(t.last_used_at),
        "active": not t.revoked and not is_expired(t.expires_at, now),
        "expires_at": iso_date(t.expires_at),
        # GitLab 17.x: the five most recent distinct client addresses, updated at most once a minute.
        "last_used_ips": list(t.last_used_ips),
    }
    if secret is not None:
        entity["token"] = secret
    return entity
