"""Bare repositories of the embedded git backend: where a project's repository lives, and creating it.

A repository path is derived only from a validated project path and checked, after resolving symlinks, to stay
inside git.repositories: `..`, encoded dots, NUL and symlinks pointing elsewhere all end in None.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from gateway.config import Config
from gateway.errors import GatewayError
from gateway.namespaces import split_full_path

log = logging.getLogger("gateway.repositories")

# Pushes of fewer objects than unpackLimit (default 100) are exploded into loose objects, and every later clone
# then recompresses them all: 20 s instead of 1.4 s for a 190 MB repository of 40 blobs (shared/notes/git.md §5).
# Keeping every received pack as a pack avoids that trap on the server side.
SERVER_CONFIG = (("receive.unpackLimit", "1"), ("transfer.unpackLimit", "1"))
INITIAL_BRANCH = "main"


class RepositoryError(GatewayError):
    """A bare repository could not be created."""


def root(config: Config) -> Path:
    return Path(config.git.repositories).resolve()


def relative_path(full_path: str) -> str | None:
    """`group/sub/project.git` for a valid project path, else None (no `..`, `.`, NUL, empty segment)."""
    segments = split_full_path(full_path)
    if segments is None or len(segments) < 2:
        return None
    return "/".join(segments) + ".git"


def locate(config: Config, full_path: str) -> Path | None:
    """The bare repository's directory, only if it resolves (symlinks followed) inside the repositories root."""
    rel = relative_path(full_path)
    if rel is None:
        return None
    base = root(config)
    candidate = (base / rel).resolve()
    if not candidate.is_relative_to(base) or candidate == base:
        return None
    return candidate


# What `git http-backend` serves with, on every repository whatever its own config (GIT_CONFIG_COUNT, git 2.31+):
# partial clones (`git clone --filter=blob:none`, GitLab's "Partial Clone"), with the settings Gitaly passes to
# upload-pack (internal/git/uploadpack.go). allowAnySHA1InWant lets a protocol v0 client fetch the blobs it left out
# on demand (v2 needs only allowFilter); a reader may then also fetch an object by its id that no ref reaches any
# longer, as on GitLab: whoever may clone a repository may read all of it.
SERVING_CONFIG = (("uploadpack.allowFilter", "true"), ("uploadpack.allowAnySHA1InWant", "true"))


def git_env(*config: tuple[str, str]) -> dict[str, str]:
    """A minimal environment for git children: no inherited GIT_DIR & co. can redirect them; `config` is passed
    as command-line configuration, above every file's."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    # The gateway may run as a user that does not own the repositories (git.md §3: "dubious ownership").
    settings = (("safe.directory", "*"), *config)
    env["GIT_CONFIG_COUNT"] = str(len(settings))
    for i, (key, value) in enumerate(settings):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
    return env


async def git(*args: str) -> str:
    """Run one git command to its end (no terminal, the minimal environment); its stdout, stripped. A failure is
    RepositoryError with git's own message."""
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=git_env(),
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        command = args[2] if args[0] == "--git-dir" else args[0]
        raise RepositoryError(f"git {command} failed: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace").strip()


async def create_bare(config: Config, full_path: str) -> Path | None:
    """Create the bare repository of a new project (embedded backend only; None for an upstream backend).

    Idempotent: an existing repository is left as it is.
    """
    if config.git.backend != "embedded":
        return None
    path = locate(config, full_path)
    if path is None:
        raise RepositoryError(f"not a valid repository path: {full_path!r}")
    if (path / "HEAD").exists():
        return path
    # No template: sample hooks and descriptions serve nobody on a server (and cost a dozen files per project).
    await git("init", "--bare", "--quiet", "--template=", f"--initial-branch={INITIAL_BRANCH}", str(path))
    for key, value in SERVER_CONFIG:
        await git("--git-dir", str(path), "config", key, value)
    log.info("created bare repository %s", path)
    return path
