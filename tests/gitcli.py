"""Real `git` for tests: an isolated HOME/config, async and sync runners, credential URLs, fixture repositories."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

GIT = shutil.which("git") or "git"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def check(self) -> Result:
        assert self.code == 0, f"git failed ({self.code}): {self.err}"
        return self


def git_env(home: Path) -> dict[str, str]:
    """Never the user's git config or terminal: HOME and GIT_CONFIG_GLOBAL in a temp dir, no prompts."""
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / ".gitconfig"
    cfg.write_text("[user]\n\tname = Test\n\temail = test@example.com\n[init]\n\tdefaultBranch = main\n")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_CONFIG_GLOBAL": str(cfg),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "SSH_ASKPASS": "",
        "LANG": "C",
        "LC_ALL": "C",
    }


async def agit(env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float = 120) -> Result:
    """Run git without blocking the event loop (the in-process gateway serves it meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        GIT, *args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def git(env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float = 600) -> Result:
    proc = subprocess.run(
        [GIT, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
    )
    return Result(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))


def with_credentials(url: str, username: str, secret: str) -> str:
    """`http://user:secret@host/...`; both parts percent-encoded (`gitlab+deploy-token-1` keeps its '+')."""
    parts = urlsplit(url)
    netloc = f"{quote(username, safe='')}:{quote(secret, safe='')}@{parts.netloc}"
    return urlunsplit(parts._replace(netloc=netloc))


def helper_args(username: str, secret: str) -> list[str]:
    """`-c credential.helper=...` answering `get` with these credentials (git.md §1); the URL stays clean."""
    script = f'!f() {{ test "$1" = get && echo username={username} && echo password={secret}; }}; f'
    return ["-c", "credential.helper=", "-c", f"credential.helper={script}"]


def protocol_args(version: int) -> list[str]:
    return ["-c", f"protocol.version={version}"]


def make_seed(env: dict[str, str], path: Path, *, branches: int = 0, files: int = 3) -> str:
    """A small repository with `branches` extra branches (> ~20 make negotiation bodies > 1 KiB: gzip)."""
    git(env, "init", "-q", str(path)).check()
    for i in range(files):
        (path / f"file{i}.txt").write_text(f"content {i}\n" * 50)
    git(env, "add", ".", cwd=path).check()
    git(env, "commit", "-qm", "seed", cwd=path).check()
    if branches:
        head = git(env, "rev-parse", "HEAD", cwd=path).check().out.strip()
        refs = "".join(f"create refs/heads/br-{i} {head}\n" for i in range(branches))
        proc = subprocess.run(
            [GIT, "update-ref", "--stdin"], input=refs.encode(), cwd=path, env=env, capture_output=True, check=False
        )
        assert proc.returncode == 0, proc.stderr
    return git(env, "rev-parse", "HEAD", cwd=path).check().out.strip()


def commit_file(env: dict[str, str], repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    git(env, "add", name, cwd=repo).check()
    git(env, "commit", "-qm", f"add {name}", cwd=repo).check()
    return git(env, "rev-parse", "HEAD", cwd=repo).check().out.strip()


def make_random_repo(env: dict[str, str], path: Path, *, megabytes: int, blob_mb: int = 5) -> str:
    """Incompressible content (random blobs) so transfer sizes are real; loose objects stored uncompressed."""
    git(env, "init", "-q", str(path)).check()
    git(env, "config", "core.compression", "0", cwd=path).check()
    left = megabytes
    i = 0
    while left > 0:
        size = min(blob_mb, left)
        (path / f"blob{i:04d}.bin").write_bytes(os.urandom(size * 1024 * 1024))
        left -= size
        i += 1
    git(env, "add", ".", cwd=path).check()
    git(env, "commit", "-qm", "random data", cwd=path).check()
    return git(env, "rev-parse", "HEAD", cwd=path).check().out.strip()


# Pushing random data: skip delta search and recompression (git.md §5: 4.8 s instead of 23.5 s).
FAST_PACK = ["-c", "pack.window=0", "-c", "pack.compression=0"]


def bare_head(env: dict[str, str], bare: Path, ref: str = "refs/heads/main") -> str:
    return git(env, "--git-dir", str(bare), "rev-parse", ref).check().out.strip()


def push_direct(env: dict[str, str], src: Path, bare: Path, *refspecs: str) -> None:
    """Seed a bare repository without any server (file path push), then repack it (the loose-object trap)."""
    git(env, *FAST_PACK, "push", "-q", str(bare), *(refspecs or ("HEAD:refs/heads/main",)), cwd=src).check()
    git(env, "--git-dir", str(bare), "-c", "pack.compression=0", "repack", "-adq", "--window=0").check()
