"""The package format table (pure): names, versions and paths of PyPI, npm, Maven and generic packages, the key a
package is owned by, and backend URL templates with the isolation they give (docs/packages.md).

Name rules follow GitLab's lib/gitlab/regex.rb (maven_*, generic_package_*), PEP 503/427/625 and npm's
validate-npm-package-name; anything that could name a path outside its root ('.', '..', '/', NUL) is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from gateway.config import PackageBackendConfig, PackagesConfig

Format = Literal["pypi", "npm", "maven", "generic"]
FORMATS: tuple[Format, ...] = ("pypi", "npm", "maven", "generic")
# Formats the gateway can store itself when no backend is configured (issue #5: "embedded default").
EMBEDDED_FORMATS: frozenset[Format] = frozenset({"maven", "generic"})

MAX_SEGMENT = 255
MAX_MAVEN_DEPTH = 32

# One path segment of a stored file: GitLab's maven_file_name_regex / generic_package_file_name_regex
# ([A-Za-z0-9._+-], '~' for generic), never '.' first (so '.', '..' and the store's own hidden files cannot be
# named) and never '..' inside.
_SEGMENT_RE = re.compile(r"\A(?!\.)(?!.*\.\.)[A-Za-z0-9_.+~-]{1,255}\Z")


def segment_ok(segment: str) -> bool:
    return bool(_SEGMENT_RE.match(segment))


# --- backends -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """A format's backend: a URL template, or the embedded store (template "" for maven and generic)."""

    format: Format
    template: str
    username: str = ""
    password: str = ""

    @property
    def configured(self) -> bool:
        return bool(self.template) or self.format in EMBEDDED_FORMATS

    @property
    def embedded(self) -> bool:
        return not self.template and self.format in EMBEDDED_FORMATS

    @property
    def flat(self) -> bool:
        """One registry for every project: the gateway must keep each name to the project that owns it.

        The embedded store and templates with a project placeholder separate projects by path instead."""
        return bool(self.template) and "{project_id}" not in self.template and "{project_path}" not in self.template

    def root(self, project_id: int, project_path: str) -> str:
        """The project's backend root, always ending in '/'; the project path is percent-encoded except '/'."""
        url = self.template.replace("{project_id}", str(project_id)).replace(
            "{project_path}", quote(project_path, safe="/")
        )
        return url if url.endswith("/") else url + "/"


def backends(config: PackagesConfig) -> dict[Format, Backend]:
    def one(fmt: Format, c: PackageBackendConfig) -> Backend:
        return Backend(fmt, c.backend, c.backend_username, c.backend_password)

    return {
        "pypi": one("pypi", config.pypi),
        "npm": one("npm", config.npm),
        "maven": one("maven", config.maven),
        "generic": one("generic", config.generic),
    }


def join(root: str, segments: list[str] | tuple[str, ...]) -> str:
    """root + each segment percent-encoded: a segment can never add '/', '?', '#' or '..' to the URL."""
    return root + "/".join(quote(s, safe="@+~") for s in segments)


# --- generic ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenericFile:
    name: str
    version: str
    file: str

    @property
    def segments(self) -> tuple[str, str, str]:
        return (self.name, self.version, self.file)


def generic_file(name: str, version: str, file: str) -> GenericFile | str:
    """The file of `PUT|GET /projects/:id/packages/generic/:name/:version/:file`, or the reason it is invalid."""
    for label, value in (("package_name", name), ("package_version", version), ("file_name", file)):
        if not segment_ok(value):
            return f"{label} is invalid"
    return GenericFile(name, version, file)


# --- Maven ----------------------------------------------------------------------------------------------------------

MAVEN_CHECKSUMS = ("md5", "sha1", "sha256", "sha512")
METADATA = "maven-metadata.xml"


@dataclass(frozen=True)
class MavenPath:
    """A path in a Maven repository layout. `package` is the groupId/artifactId path that owns it."""

    segments: tuple[str, ...]
    package: str
    checksum: str | None  # the algorithm when the path names a checksum file (x.jar.sha1) of `base`

    @property
    def base(self) -> tuple[str, ...]:
        """The file a checksum describes (the path itself when it is not a checksum file)."""
        if self.checksum is None:
            return self.segments
        return (*self.segments[:-1], self.segments[-1][: -len(self.checksum) - 1])

    @property
    def enclosing(self) -> str | None:
        """For `X/maven-metadata.xml` outside a SNAPSHOT (and its checksums), keyed X: the folder above X. A path
        cannot tell whether X is an artifact (g/a) or a release's version folder (g/a/1.0, whose metadata Gradle
        uploads) of the package there; None for every other path."""
        if self.base[-1] != METADATA or self.package == "/".join(self.segments[:-2]) or "/" not in self.package:
            return None
        return self.package.rsplit("/", 1)[0]

    @property
    def mutable(self) -> bool:
        """maven-metadata.xml is rewritten by every deploy and SNAPSHOT versions are re-deployed by design;
        release files are immutable once stored (re-uploading the same bytes is fine)."""
        return self.base[-1] == METADATA or any(s.endswith("-SNAPSHOT") for s in self.segments[-2:-1])


def maven_path(raw: str) -> MavenPath | str:
    """Split and check a repository path; the package key is groupId/artifactId (GitLab's maven_metadatum.path
    without the version): for `g/a/1.0/a-1.0.jar` it is `g/a`, for `g/a/maven-metadata.xml` also `g/a`."""
    segments = tuple(raw.split("/"))
    if len(segments) < 2 or len(segments) > MAX_MAVEN_DEPTH or not all(segment_ok(s) for s in segments):
        return "path is invalid"
    file = segments[-1]
    checksum = next((c for c in MAVEN_CHECKSUMS if file.endswith("." + c) and len(file) > len(c) + 1), None)
    base = file[: -len(checksum) - 1] if checksum else file
    if base == METADATA:
        # Artifact-level metadata sits in g/a/; SNAPSHOT version metadata in g/a/1.0-SNAPSHOT/.
        versioned = segments[-2].endswith("-SNAPSHOT")
        package = segments[:-2] if versioned else segments[:-1]
    else:
        if len(segments) < 3:
            return "path is invalid"
        artifact, version = segments[-3], segments[-2]
        prefix = f"{artifact}-{version.removesuffix('-SNAPSHOT')}"
        if not (base == prefix or base.startswith(prefix + ".") or base.startswith(prefix + "-")):
            # A file must be named after its artifact and version (Maven's layout); anything else could not be
            # attributed to a package, so it could not be kept to one project.
            return "file name does not match the artifact and version of its path"
        package = segments[:-2]
    if not package:
        return "path is invalid"
    return MavenPath(segments, "/".join(package), checksum)


# --- PyPI -----------------------------------------------------------------------------------------------------------

# PEP 508 names; PEP 503 normalisation.
_PYPI_NAME_RE = re.compile(r"\A(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]{0,253}[A-Za-z0-9])\Z")
_DIST_EXTENSIONS = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz", ".egg")
_SDIST_VERSION_START = re.compile(r"-\d+[a-z_.!+]", re.IGNORECASE)  # pypiserver's pkg_helpers._pkgname_re
# pypiserver's pkg_helpers._archive_suffix_rx: what it strips from an sdist's name before reading the project in it.
_SDIST_SUFFIX = re.compile(
    r"(\.zip|\.tar\.gz|\.tgz|\.tar\.bz2|\.tar\.xz|-py[23]\.\d-.*|\.win-amd64-py[23]\.\d\..*|\.win32-py[23]\.\d\..*|\.egg)$",
    re.IGNORECASE,
)


def pypi_normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pypi_name(raw: str) -> str | None:
    """The PEP 503 normalised name, or None when `raw` is not a valid project name."""
    return pypi_normalize(raw) if _PYPI_NAME_RE.match(raw) else None


def pypi_file_project(filename: str) -> str | None:
    """The normalised project a distribution file belongs to, read from its name as pypiserver reads it (it files
    an upload by that, pkg_helpers.guess_pkgname_and_version): a wheel's name ends at its first '-' (PEP 427 has
    none in names); an sdist's at the one '-' it has, else at the last one when it has no '.', else at the first
    '-' before digits and one of `a-z_.!+` (`foo-2-1.0.tar.gz` is `foo-2`'s). The version must start with a digit.
    `.metadata` files (PEP 658) belong to their distribution. None for names that are no distribution."""
    base = filename.removesuffix(".metadata")
    extension = next((e for e in _DIST_EXTENSIONS if base.endswith(e)), None)
    if not segment_ok(filename) or extension is None:
        return None
    # pypiserver strips more than the extension (`-py3.1-…` to the end: `victim-py3.1-2foo.tar.gz` is `victim`'s to
    # it, found by a review), so the name is read from what it leaves.
    stem = base.removesuffix(extension) if extension == ".whl" else _SDIST_SUFFIX.sub("", base)
    if extension == ".whl":
        name, _, version = stem.partition("-")
    elif stem.count("-") == 1 or "." not in stem:
        name, _, version = stem.rpartition("-")
    else:
        name = _SDIST_VERSION_START.split(stem, maxsplit=1)[0]
        version = stem[len(name) + 1 :]
    return pypi_name(name) if name and version[:1].isdigit() else None


# --- npm ------------------------------------------------------------------------------------------------------------

# validate-npm-package-name for new packages: lower case, URL-safe, no leading '.' or '_', at most 214 characters.
_NPM_PART_RE = re.compile(r"\A[a-z0-9~-][a-z0-9._~-]*\Z")
MAX_NPM_NAME = 214


def npm_name(raw: str) -> str | None:
    """`name` or `@scope/name` (a scoped name arrives with its '/' decoded), or None when invalid."""
    if not raw or len(raw) > MAX_NPM_NAME:
        return None
    if raw.startswith("@"):
        scope, sep, name = raw[1:].partition("/")
        ok = sep and _NPM_PART_RE.match(scope) and _NPM_PART_RE.match(name) and ".." not in raw
        return raw if ok else None
    return raw if _NPM_PART_RE.match(raw) and ".." not in raw else None


def npm_document_path(name: str) -> str:
    """The registry path of a package document: scoped names with '/' encoded (`@scope%2fname`), as npm sends."""
    return quote(name, safe="@")


def npm_tarball(path: str) -> tuple[str, str] | None:
    """(name, file) of `<name>/-/<file>.tgz` (scoped: `@scope/name/-/name-1.0.0.tgz`), or None."""
    name, sep, file = path.partition("/-/")
    if not sep or npm_name(name) is None or not segment_ok(file) or not file.endswith(".tgz"):
        return None
    basename = name.rsplit("/", 1)[-1]
    if not file.startswith(basename + "-"):
        return None
    return name, file
