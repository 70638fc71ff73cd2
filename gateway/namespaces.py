"""Namespace and project paths (pure): GitLab's path rules, reserved names, `:id` references, image names.

Rules from GitLab's lib/gitlab/path_regex.rb and lib/container_registry/path.rb.
"""

from __future__ import annotations

import functools
import re

# Groups nest up to 20 levels (GitLab's Namespace::NUMBER_OF_ANCESTORS_ALLOWED).
MAX_DEPTH = 20
MAX_PATH = 255

# path_regex.rb NAMESPACE_FORMAT_REGEX: starts with a letter, digit, '_' or '.', ends with a letter, digit,
# '_' or '-', only [A-Za-z0-9_.-] between; a single character must be a letter, digit or '_'.
_PATH_RE = re.compile(r"\A(?:[a-zA-Z0-9_.][a-zA-Z0-9_.-]*[a-zA-Z0-9_-]|[a-zA-Z0-9_])\Z")
PATH_MESSAGE = (
    "can contain only letters, digits, '_', '-' and '.'. Cannot start with '-', end in '.git' or end in '.atom'"
)

# First segments the gateway routes itself (ARCHITECTURE.md) plus GitLab's TOP_LEVEL_ROUTES that clients know.
RESERVED_TOP_LEVEL = frozenset(
    {
        "-",
        "api",
        "v2",
        "jwt",
        "groups",
        "users",
        "admin",
        "assets",
        "dashboard",
        "explore",
        "help",
        "oauth",
        "profile",
        "projects",
        "public",
        "robots.txt",
        "search",
        "uploads",
        "favicon.ico",
        ".well-known",
        "404.html",
        "422.html",
        "500.html",
        "502.html",
        "503.html",
        "health_check",
    }
)
# Child paths that would collide with routes under a namespace (GitLab's PROJECT_WILDCARD_ROUTES subset).
RESERVED_CHILD = frozenset({"-", "info", "objects", "git-upload-pack", "git-receive-pack", "HEAD"})


def path_problem(path: str, *, top_level: bool = False) -> str | None:
    """Why `path` is not a valid namespace or project path, or None when it is."""
    if not path:
        return "can't be blank"
    if len(path) > MAX_PATH:
        return f"is too long (maximum is {MAX_PATH} characters)"
    lowered = path.lower()
    if not _PATH_RE.match(path) or lowered.endswith((".git", ".atom")) or ".." in path:
        return PATH_MESSAGE
    if is_reserved(path, top_level=top_level):
        return f"{path} is a reserved name"
    return None


def is_reserved(path: str, *, top_level: bool) -> bool:
    lowered = path.lower()
    return lowered in RESERVED_TOP_LEVEL if top_level else lowered in {c.lower() for c in RESERVED_CHILD}


def split_full_path(full_path: str) -> list[str] | None:
    """Segments of a full path after percent-decoding once, or None for anything that is not a plain path.

    Refuses '..', '.', empty segments, NUL and other control characters, backslashes, and over-deep paths,
    so a decoded path can never name something outside its root.
    """
    if not full_path or len(full_path) > (MAX_PATH + 1) * (MAX_DEPTH + 1):
        return None
    segments = full_path.split("/")
    if len(segments) > MAX_DEPTH + 1:
        return None
    for segment in segments:
        if not _PATH_RE.match(segment) or ".." in segment:
            return None
    return segments


def parse_ref(raw: str, *, project: bool) -> int | str | None:
    """A GitLab `:id` parameter: a numeric id or a URL-encoded full path; None when it can name nothing.

    aiohttp gives match_info already percent-decoded once; `%2F` arrives as '/'. A project path must contain
    '/' (GitLab: a non-numeric project id without one is not found).
    """
    if raw.isascii() and raw.isdigit():
        return int(raw) if len(raw) <= 18 else None
    if "%" in raw:
        # Already decoded once: a '%' left came from %25 (double encoding), and no GitLab path contains one.
        return None
    segments = split_full_path(raw)
    if segments is None or (project and len(segments) < 2):
        return None
    return "/".join(segments)


_IMAGE_NAME_RE = re.compile(r"\A[a-z0-9]+(?:(?:[._/]|__|-*)[a-z0-9]+)*\Z")


@functools.lru_cache(maxsize=4096)  # a busy registry asks for the same few names over and over
def image_project_candidates(name: str) -> tuple[str, ...]:
    """Project paths an image name may belong to, longest first: the name, minus 1, minus 2 trailing segments.

    GitLab's ContainerRegistry::Path: lower-cased, at least 2 and fewer than 20 components, and only
    candidates with at least 2 components (`group/proj`, `group/proj/img`, `group/proj/a/b` → `group/proj`).
    """
    lowered = name.lower()
    if not _IMAGE_NAME_RE.match(lowered):
        return ()
    parts = lowered.split("/")
    if not 2 <= len(parts) < 20:
        return ()
    return tuple("/".join(parts[: len(parts) - drop]) for drop in range(3) if len(parts) - drop >= 2)
