"""`gateway backup DIR` / `gateway restore DIR`: an installation as a folder (the database as one SQLite snapshot,
the key files, one `git bundle` per embedded repository, the embedded package files) and back into a new one.
"""

from __future__ import annotations

import errno
import filecmp
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway import encryption_keys, key_rotation, repositories
from gateway.config import Config
from gateway.errors import ConfigError, GatewayError, StoreError
from gateway.secretbox import SecretBox
from gateway.store import migrations, open_store
from gateway.store.copy import Copied, copy_store, schema_tables
from gateway.store.sqlite import SQLiteStore

FORMAT = "deploy-token-gateway backup"
VERSION = 1
MANIFEST = "manifest.json"
DATABASE = "database.db"
PACKAGE_BLOBS = "blobs"  # package_store.py: content by digest; the rest are pointers to it
PACKAGE_TMP = "tmp"
BUNDLE_HEADERS = (b"# v2 git bundle\n", b"# v3 git bundle\n")  # gitformat-bundle(5)


class BackupError(GatewayError):
    """A backup could not be taken or restored; nothing past the failed step was written."""


@dataclass(frozen=True)
class Repository:
    path: str  # the project's full path
    bundle: str | None  # relative to the backup folder; None for a repository without a ref
    head: str  # what HEAD names, e.g. refs/heads/main
    sha256: str | None = None  # of the bundle file: restore checks it first; --link-dest links to it only if it holds


def _keys(config: Config) -> dict[str, Path]:
    """The key files an installation cannot be restored without: the encryption key (CI variables of each
    `gitlab-deploy-token`) with, during a rotation, the staged and the retiring one (which may still open a secret),
    the registry's signing key and the certificate the registry trusts."""
    key = Path(config.storage.encryption_key)
    return {
        "encryption_key": key,
        "encryption_key_staged": encryption_keys.staged_path(key),
        "encryption_key_retiring": encryption_keys.retiring_path(key),
        "registry_signing_key": Path(config.registry.signing_key),
        "registry_signing_key_staged": key_rotation.staged_path(Path(config.registry.signing_key)),
        "registry_certificate": Path(config.registry.certificate),
    }


# The key files that must be in every backup (`gateway init` writes them): without the encryption key, the CI
# variables of each `gitlab-deploy-token` are lost for good.
REQUIRED_KEYS = ("encryption_key",)
# Every key file but the certificate is a secret: restored readable by its owner only, whatever mode the backup's
# copy has (by exclusion, so that a role added later is private too: found by a review).
_PUBLIC = ("registry_certificate",)


def _read_keys(config: Config) -> dict[str, bytes]:
    found = {}
    for name, path in _keys(config).items():
        try:
            found[name] = path.read_bytes()
        except FileNotFoundError:
            continue
    return found


def _packages(config: Config) -> Path:
    return Path(config.storage.data_dir) / "packages"


def _digest(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


async def _refs(repo: Path) -> list[str]:
    """Every ref of a repository as `object name`, sorted: what `git bundle create --all` writes into its header."""
    return sorted(
        (await repositories.git("--git-dir", str(repo), "for-each-ref", "--format=%(objectname) %(refname)")).split(
            "\n"
        )
    )


async def _unchanged(earlier: Path, entry: dict[str, Any], refs: list[str]) -> Path | None:
    """The earlier backup's bundle of this repository if it holds exactly `refs` (then it holds every object they
    reach: git names objects by their content) and its bytes are still the ones its manifest recorded."""
    try:
        bundle = _inside(earlier, entry.get("bundle"))
        heads = await repositories.git("bundle", "list-heads", str(bundle))
    except (BackupError, repositories.RepositoryError):
        return None  # an earlier backup without this repository's bundle, or a bundle git cannot read
    # The header names HEAD too where it points at a branch; the manifest keeps what HEAD names.
    if sorted(line for line in heads.split("\n") if not line.endswith(" HEAD")) != refs:
        return None
    if not isinstance(entry.get("sha256"), str) or _digest(bundle) != entry["sha256"]:
        return None  # damaged since, or from a backup that recorded no digest: bundled anew
    return bundle


async def _bundle(
    config: Config, full_path: str, folder: Path, earlier: Earlier | None
) -> tuple[Repository, bool] | None:
    """One repository as a bundle of every ref (git's own consistent snapshot of it, taken while pushes go on), or
    a hard link to the earlier backup's bundle where its refs have not moved since. True if linked."""
    repo = repositories.locate(config, full_path)
    if repo is None or not (repo / "HEAD").is_file():
        return None
    head = await repositories.git("--git-dir", str(repo), "symbolic-ref", "HEAD")
    refs = await _refs(repo)
    if refs == [""]:
        return Repository(full_path, None, head), False  # git refuses an empty bundle; restore makes the repository
    relative = f"repositories/{repositories.relative_path(full_path)}".removesuffix(".git") + ".bundle"
    target = folder / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    entry = earlier.repositories.get(full_path) if earlier is not None else None
    if earlier is not None and entry is not None and (same := await _unchanged(earlier.folder, entry, refs)):
        linked = _link_or_copy(same, target, same)  # its digest checked by _unchanged
        return Repository(full_path, relative, head, str(entry["sha256"])), linked
    await repositories.git("--git-dir", str(repo), "bundle", "create", "--quiet", str(target), "--all")
    return Repository(full_path, relative, head, _digest(target)), False


@dataclass(frozen=True)
class Earlier:
    """The finished backup that --link-dest names: its folder and its repositories by project path."""

    folder: Path
    repositories: dict[str, dict[str, Any]]

    @classmethod
    def read(cls, folder: Path) -> Earlier:
        manifest = read_manifest(folder)  # a finished backup (so never the new, empty folder), or nothing is written
        entries = manifest.get("repositories")
        listed = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
        return cls(folder, {str(e.get("path")): e for e in listed})


@dataclass
class Filed:
    """What the copy of package files did: files written, and of those, blobs linked to an earlier backup's."""

    files: int = 0
    linked: int = 0


def _link_or_copy(file: Path, destination: Path, same: Path, *, sha256: str | None = None) -> bool:
    """A blob (named by its SHA-256, written once, never changed) as a hard link to `same`, the same blob in an
    earlier backup, as rsync --link-dest does: no bytes copied, no space taken twice. True if linked; a copy where
    the earlier backup lacks it or no link can be made (another file system)."""
    try:
        # With `sha256`, the earlier copy's bytes are read whole against it (a bit flipped in place keeps the
        # size): a damaged blob is copied anew, never linked into one more backup (found by a review).
        same_size = same.is_file() and not same.is_symlink() and same.stat().st_size == file.stat().st_size
        if same_size and (sha256 is None or _digest(same) == sha256):
            os.link(same, destination)
            return True
    except OSError:
        pass  # another file system, or one without hard links: copy it
    shutil.copy2(file, destination)
    return False


def _files(top: Path) -> list[Path]:
    """The regular files below `top`, sorted, never through a symbolic link (Path.rglob follows linked folders out
    of the tree before Python 3.13: a backup's `packages/x -> /etc` would be restored, found by a review)."""
    found = []
    for folder, _, names in os.walk(top):
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                found.append(path)
    return sorted(found)


def _links(top: Path) -> list[Path]:
    """The symbolic links below `top` (and `top` itself): what no backup writes, so what `check` reports."""
    found = [top] if top.is_symlink() else []
    for folder, folders, names in os.walk(top):
        found += [Path(folder) / n for n in folders + names if (Path(folder) / n).is_symlink()]
    return sorted(found)


def _copy_packages(source: Path, target: Path, earlier: Path | None = None) -> Filed:
    """The pointers first, then the blobs: a pointer published meanwhile names a blob published before it, so
    every pointer in the copy finds its blob there. Files only, the unfinished uploads (tmp) left out. Blobs that
    `earlier` (a previous copy's folder) holds are linked to it rather than copied."""
    filed = Filed()
    if not source.is_dir():
        return filed
    for top in sorted(source.iterdir(), key=lambda p: p.name == PACKAGE_BLOBS):
        if top.name == PACKAGE_TMP or top.is_symlink() or not top.is_dir():
            continue
        for file in _files(top):
            relative = file.relative_to(source)
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            if top.name == PACKAGE_BLOBS and earlier is not None:
                filed.linked += _link_or_copy(file, destination, earlier / relative, sha256=file.name)
            else:
                shutil.copy2(file, destination)
            filed.files += 1
    return filed


async def take(
    config: Config, folder: Path, note: Callable[[str], None], *, link_dest: Path | None = None
) -> dict[str, Any]:
    """Write a backup of the installation into `folder` (new or empty) while it serves; return the manifest. With
    `link_dest` (a finished earlier backup), the package blobs and repository bundles it holds are hard links to its
    own."""
    if folder.exists() and any(folder.iterdir()):
        raise BackupError(f"{folder} is not empty: back up into a new folder")
    earlier = Earlier.read(link_dest) if link_dest is not None else None
    for name in REQUIRED_KEYS:
        if not (path := _keys(config)[name]).is_file():
            raise BackupError(
                f"{path} (storage.{name}) is missing: a backup without it could not give CI the secrets of"
                f" `gitlab-deploy-token`s again; point storage.{name} at it"
            )
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)  # the installation's secrets: its owner's alone
    # The key files as they were before the database snapshot, compared with the ones copied after it: a key
    # rotation step in between (a secret sealed with a key the copy lacks) fails the backup instead of losing it.
    keys_before = _read_keys(config)
    source = await open_store(config)
    try:
        snapshot = await open_store(config, f"sqlite:///{(folder / DATABASE).resolve()}")
        try:
            copied = await copy_store(source, snapshot)
            note(f"database: {sum(copied.rows.values())} rows")
            # The repositories of the snapshot's projects, taken after it: each holds at least what it named.
            projects = [p.full_path for p in await snapshot.list_projects()]
            schema = await snapshot.schema_version()
        finally:
            await snapshot.close()
    finally:
        await source.close()
    keys = {}
    for name, path in _keys(config).items():
        if path.is_file():
            # Named by role: two key files may share a name in different folders (secrets/a/key, secrets/b/key).
            (folder / "keys").mkdir(exist_ok=True, mode=0o700)
            shutil.copy2(path, folder / "keys" / name)
            keys[name] = f"keys/{name}"

    keys_after = {name: (folder / relative).read_bytes() for name, relative in keys.items()}
    if keys_after != keys_before:
        raise BackupError(
            "a key file changed while the database was copied (a step of `gateway encryption-key` or `registry-key`"
            f" ran): take the backup again, into a new folder ({folder} is incomplete)"
        )
    bundled: list[Repository] = []
    bundles_linked = 0
    if config.git.backend == "embedded":
        for full_path in projects:
            if (repo := await _bundle(config, full_path, folder, earlier)) is not None:
                bundled.append(repo[0])
                bundles_linked += repo[1]
        linked = f" ({bundles_linked} bundles linked to {link_dest})" if link_dest else ""
        note(f"repositories: {len(bundled)} of {len(projects)} projects{linked}")
    filed = _copy_packages(_packages(config), folder / "packages", link_dest / "packages" if link_dest else None)
    note(f"package files: {filed.files}" + (f" ({filed.linked} linked to {link_dest})" if link_dest else ""))
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "schema_version": schema,
        "database": DATABASE,
        "rows": copied.rows,
        "keys": keys,
        "git_backend": config.git.backend,
        "repositories": [vars(r) for r in bundled],
        "repositories_linked": bundles_linked,
        "package_files": filed.files,
        "package_files_linked": filed.linked,
    }
    # Written last: a folder without it is a backup that did not finish.
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


MAX_MANIFEST = 64 * 1024 * 1024


def _read_regular(path: Path, limit: int) -> bytes:
    """A regular file's bytes, never through a link, a FIFO (open would wait forever) or a device (found by a
    review), at most `limit` of them."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = file.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes")
    return data


def read_manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(_read_regular(folder / MANIFEST, MAX_MANIFEST).decode("utf-8"))
    except FileNotFoundError:
        raise BackupError(f"no {MANIFEST} in {folder}: not a backup, or one that did not finish") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackupError(f"{folder / MANIFEST} cannot be read: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{folder / MANIFEST} is not a gateway backup's manifest")
    if manifest.get("version") != VERSION:
        raise BackupError(f"backup format version {manifest.get('version')!r}: this gateway reads version {VERSION}")
    _check_structure(folder / MANIFEST, manifest)
    return manifest


def _check_structure(where: Path, manifest: dict[str, Any]) -> None:
    """The manifest's fields of the types this code reads, repositories listed once: a hand-edited or damaged one is
    refused at once, not halfway through a restore (found by a review)."""
    keys, entries = manifest.get("keys", {}), manifest.get("repositories", [])
    problem = None
    if not isinstance(manifest.get("database"), str):
        problem = "`database` is not a file name"
    elif not (isinstance(keys, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items())):
        problem = "`keys` is not an object of file names"
    elif not (isinstance(entries, list) and all(isinstance(e, dict) for e in entries)):
        problem = "`repositories` is not a list of objects"
    else:
        for entry in entries:
            bundle, digest = entry.get("bundle"), entry.get("sha256")
            if not (isinstance(entry.get("path"), str) and isinstance(entry.get("head"), str)):
                problem = f"a repository without a `path` and a `head`: {entry!r}"[:300]
            elif not (bundle is None or isinstance(bundle, str)) or not (digest is None or isinstance(digest, str)):
                problem = f"repository {entry['path']!r}: `bundle` and `sha256` must be text"
        paths = [str(e.get("path")).lower() for e in entries]
        if problem is None and len(set(paths)) != len(paths):
            problem = "a repository is listed twice"
    if problem is not None:
        raise BackupError(f"{where}: {problem}")


def _inside(folder: Path, relative: object) -> Path:
    """A file the manifest names, only inside the backup folder."""
    if not isinstance(relative, str):
        raise BackupError(f"{MANIFEST}: not a file name: {relative!r}")
    path = (folder / relative).resolve()
    if not path.is_relative_to(folder.resolve()) or not path.is_file():
        raise BackupError(f"{MANIFEST} names {relative!r}, which is not a file in the backup")
    return path


def _check_target(config: Config, folder: Path, manifest: dict[str, Any]) -> list[tuple[str, Path, Path]]:
    """Everything restore would overwrite or read, checked before it writes anything: a key file that differs, a
    repository or package file already there, a bundle that is not what the backup wrote. The key files to copy:
    (role, the backup's, the installation's)."""
    keys = []
    for name, path in _keys(config).items():
        if name not in manifest.get("keys", {}):
            continue
        saved = _inside(folder, manifest["keys"][name])
        if path.exists() and not filecmp.cmp(saved, path, shallow=False):
            raise BackupError(f"{path} exists and differs from the backup's: restore into a new installation")
        keys.append((name, saved, path))
    for entry in manifest.get("repositories", []):
        repo = repositories.locate(config, str(entry.get("path")))
        if repo is None:
            raise BackupError(f"{MANIFEST}: not a project path: {entry.get('path')!r}")
        if not str(entry.get("head")).startswith("refs/heads/"):
            raise BackupError(f"{MANIFEST}: {entry['path']}: HEAD must name a branch, not {entry.get('head')!r}")
        if repo.exists() and any(repo.iterdir()):
            raise BackupError(f"{repo} exists: restore into a new installation")
        if entry.get("bundle") is not None:
            bundle = _inside(folder, entry["bundle"])
            # A damaged bundle would fail its fetch after the database is restored: refused before anything is.
            if entry.get("sha256") is not None and _digest(bundle) != entry["sha256"]:
                raise BackupError(f"{bundle} is damaged: its SHA-256 is not the one {MANIFEST} records")
    packages = _packages(config)
    if (folder / "packages").is_dir() and packages.is_dir() and any(packages.iterdir()):
        raise BackupError(f"{packages} is not empty: restore into a new installation")
    return keys


async def check(config: Config, folder: Path, note: Callable[[str], None]) -> list[str]:
    """Read every file of the backup in `folder` whole and check it against what the backup recorded, writing
    nothing anywhere: what `restore` would find wrong only halfway, or never (a damaged package blob). The problems
    found, none when the backup is whole. Whether the installation could take it is restore's own first check."""
    manifest = read_manifest(folder)
    problems: list[str] = []
    problems += await _check_database(config, folder, manifest, note)
    for name, relative in (manifest.get("keys") or {}).items():
        try:
            path = _inside(folder, relative)
            if name.startswith("encryption_key"):
                SecretBox(path.read_bytes())  # a damaged one would open no secret it sealed
        except (BackupError, ConfigError) as exc:
            problems.append(f"key file {name}: {exc}")
        except OSError as exc:
            problems.append(f"key file {name}: cannot read it: {exc.strerror}")
    problems += await _check_bundles(folder, manifest.get("repositories") or [], note)
    problems += _check_packages(folder / "packages", note)
    return problems


async def _check_database(
    config: Config, folder: Path, manifest: dict[str, Any], note: Callable[[str], None]
) -> list[str]:
    """The snapshot: SQLite's integrity check, a schema this release can restore, and the rows the manifest
    counted, table by table."""
    try:
        database = _inside(folder, manifest.get("database"))
        snapshot = await open_store(config, f"sqlite:///{database}", immutable=True)
    except (BackupError, StoreError) as exc:
        return [f"database: {exc}"]
    problems = []
    try:
        assert isinstance(snapshot, SQLiteStore)  # an sqlite:/// URL
        problems += [f"database: {problem}" for problem in await snapshot.integrity_problems()]
        version = await snapshot.schema_version()
        latest = migrations.bundled("sqlite")[-1][0]
        if not 0 < version <= latest:
            problems.append(f"database: schema version {version}; this gateway restores versions 1 to {latest}")
        recorded = manifest.get("rows")
        counted: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
        async with snapshot.copy_transaction(write=False) as side:
            # As the backup's release left them: an earlier schema lacks the tables later migrations add.
            tables = await schema_tables(side) if version else []
            rows = {table.name: await side.count(table) for table in tables}
        for table, count in rows.items():
            if counted.get(table, count) != count:
                problems.append(f"database: {table} holds {count} rows, the manifest counted {counted[table]}")
        note(f"database: {sum(rows.values())} rows, schema version {version}")
    except (StoreError, sqlite3.Error) as exc:
        problems.append(f"database: cannot be read whole: {exc}")
    finally:
        await snapshot.close()
    return problems


def _bundle_problem(bundle: Path) -> str | None:
    """What makes `bundle` no bundle restore can fetch into a new repository: not git's bundle header (`git fetch
    FILE` reads anything else as a repository, a one-line `gitdir: /elsewhere` another one of the host), or a
    header naming prerequisite commits or a filter (a backup writes whole `--all` bundles; a thin one would fail
    halfway). None when it is one (gitformat-bundle(5))."""
    with bundle.open("rb") as file:
        if file.readline(64) not in BUNDLE_HEADERS:
            return "is not a git bundle"
        for line in file:
            if line == b"\n":
                return None
            if line.startswith((b"-", b"@filter")):
                return "needs commits it does not hold (a prerequisite or a filter), which no backup writes"
    return "is not a git bundle (its header does not end)"


async def _check_bundles(folder: Path, entries: list[Any], note: Callable[[str], None]) -> list[str]:
    """Each bundle's header, then its bytes against the SHA-256 the manifest recorded; a bundle of a backup that
    recorded none is fetched whole by git into a scratch repository. Then the branch each HEAD names."""
    problems, bundles = [], 0
    with tempfile.TemporaryDirectory(prefix="gateway-check-") as scratch:
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("bundle") is None:
                continue
            try:
                bundle = _inside(folder, entry["bundle"])
                bundles += 1
                recorded = entry.get("sha256")
                if isinstance(recorded, str) and _digest(bundle) != recorded:
                    problems.append(f"{bundle} is damaged: its SHA-256 is not the one {MANIFEST} records")
                    continue
                problem = _bundle_problem(bundle)  # the bytes the manifest recorded, made up with it or not
                if problem is not None:
                    problems.append(f"{bundle} {problem}")
                    continue
                if isinstance(recorded, str):
                    continue
                # No digest to compare (a backup of an earlier release): fetched whole into a new scratch
                # repository, as restore will into a new one, so a truncated pack fails here and not halfway.
                verifier = Path(scratch) / f"verify-{bundles}.git"
                await repositories.git("init", "--bare", "--quiet", str(verifier))
                await repositories.git("--git-dir", str(verifier), "fetch", "--quiet", str(bundle), "+refs/*:refs/*")
                shutil.rmtree(verifier)
            except (BackupError, repositories.RepositoryError) as exc:
                problems.append(f"repository {entry.get('path')!r}: {exc}")
            except OSError as exc:
                problems.append(f"repository {entry.get('path')!r}: cannot read its bundle: {exc.strerror}")
    for entry in entries:
        try:  # what restore names HEAD after: a branch git accepts (refs/heads/../x is none)
            await repositories.git("check-ref-format", str(entry.get("head")))
        except repositories.RepositoryError:
            problems.append(f"repository {entry.get('path')!r}: HEAD names no branch: {entry.get('head')!r}")
    note(f"repositories: {bundles} bundles")
    return problems


def _check_packages(packages: Path, note: Callable[[str], None]) -> list[str]:
    """Each blob's bytes against the SHA-256 that names it, and each pointer's blob there, of the size it says."""
    problems: list[str] = [f"{link} is a symbolic link, which no backup writes" for link in _links(packages)]
    if not packages.is_dir():
        return problems
    blobs = packages / PACKAGE_BLOBS
    checked = 0
    for blob in _files(blobs) if blobs.is_dir() and not blobs.is_symlink() else []:
        checked += 1
        if _digest(blob) != blob.name:
            problems.append(f"{blob} is damaged: its SHA-256 is not its name")
    pointers = 0
    for pointer in _files(packages):
        if pointer.is_relative_to(blobs) or not pointer.name.startswith(".f."):
            continue
        pointers += 1
        try:
            meta = json.loads(pointer.read_text(encoding="utf-8"))
            digest, size = str(meta["sha256"]), int(meta["size"])
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
            problems.append(f"{pointer} cannot be read: {exc}")
            continue
        blob = blobs / digest[:2] / digest
        if not blob.is_file() or blob.stat().st_size != size:
            problems.append(f"{pointer} names a blob of {size} bytes that the backup does not hold: {blob}")
    note(f"package files: {checked} blobs, {pointers} pointers")
    return problems


async def restore(config: Config, folder: Path, note: Callable[[str], None]) -> Copied:
    """Restore the backup in `folder` into the configured installation, which must be new (no rows, no repository,
    no package; key files absent or the same): the database first (all or nothing), then keys, repositories,
    packages."""
    manifest = read_manifest(folder)
    keys = _check_target(config, folder, manifest)
    if manifest.get("repositories") and config.git.backend != "embedded":
        raise BackupError('the backup holds embedded repositories: set git.backend = "embedded" to restore them')
    # What the writes below would meet only halfway, checked first: bundles (git's header, the recorded bytes, or
    # git's own verification), the branches HEAD names, links among the package files.
    problems = await _check_bundles(folder, manifest.get("repositories", []), lambda _: None)
    problems += [f"{link} is a symbolic link, which no backup writes" for link in _links(folder / "packages")]
    if problems:
        raise BackupError("the backup cannot be restored, nothing was written: " + "; ".join(problems))
    source = await open_store(config, f"sqlite:///{_inside(folder, manifest.get('database'))}", immutable=True)
    try:
        target = await open_store(config)
        try:
            copied = await copy_store(source, target)
        finally:
            await target.close()
    finally:
        await source.close()
    if copied.version != copied.found:
        note(f"database: a backup of schema version {copied.found}, copied and then migrated to {copied.version}")
    note(f"database: {sum(copied.rows.values())} rows")
    try:
        for name, saved, path in keys:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not path.exists():  # else the same bytes (_check_target)
                _write_key(saved, path, private=name not in _PUBLIC)
        note(f"key files: {len(keys)}")
        for entry in manifest.get("repositories", []):
            repo = await repositories.create_bare(config, entry["path"])
            assert repo is not None  # embedded, checked above
            if entry.get("bundle") is not None:
                bundle = str(_inside(folder, entry["bundle"]))
                await repositories.git("--git-dir", str(repo), "fetch", "--quiet", bundle, "+refs/*:refs/*")
            await repositories.git("--git-dir", str(repo), "symbolic-ref", "HEAD", str(entry["head"]))
        note(f"repositories: {len(manifest.get('repositories', []))}")
        filed = _copy_packages(folder / "packages", _packages(config))
    except (OSError, repositories.RepositoryError, BackupError) as exc:
        raise BackupError(
            f"{exc}: the database is restored but the installation is not whole; remove what this restore wrote"
            f" (the database, {config.storage.data_dir}, the key files it named) and restore again"
        ) from exc
    note(f"package files: {filed.files}")
    return copied


def _write_key(saved: Path, path: Path, *, private: bool) -> None:
    """A key file as the backup holds it, created readable by its owner alone when it is a secret, whatever mode
    the backup's copy has (object storage, an archive tool; found by a review)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(descriptor, "wb") as file:
        file.write(saved.read_bytes())
