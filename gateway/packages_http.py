"""Package endpoints at GitLab's URLs (PyPI, npm, Maven, generic): the five steps of every request, then the
embedded store or the format's backend through the shared forwarder (docs/packages.md).

Authentication and answers follow GitLab (shared/notes/gitlab-behaviour.md §5.3): the token is the Basic password
(username ignored), a Deploy-Token header, a Bearer token or PRIVATE-TOKEN; missing or bad credentials → 401 with
`WWW-Authenticate: Basic realm="GitLab Packages Registry"` (middleware, family "packages"); no package ability on
a visible project → 403; a project the caller cannot see → 404.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from http import HTTPStatus
from pathlib import Path
from typing import NoReturn

import aiohttp
from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import parse_mimetype
from multidict import CIMultiDict

from gateway import access, authn, npm_publish, packages, packages_documents, principals, proxy, pypi_form
from gateway.app import CLOCK, CONFIG, PROXY, STORE
from gateway.clients import CLIENTS
from gateway.config import Config, PackagesConfig
from gateway.errors import (
    BackendRefused,
    BadGateway,
    BadRequest,
    Conflict,
    Forbidden,
    GatewayTimeout,
    HTTPFailure,
    NotFound,
    Unauthorized,
)
from gateway.middleware import PRINCIPAL
from gateway.namespaces import parse_ref
from gateway.package_store import PackageStore, StoredFile
from gateway.packages import Backend, Format
from gateway.packages_upload import Limit, check_length, limited
from gateway.policy import Denied, Deny, Operation, Target
from gateway.principals import Anonymous, Principal
from gateway.store.base import Namespace, Project

log = logging.getLogger("gateway.packages")

Link = packages_documents.Link

UNAUTHORIZED = "401 Unauthorized"
PROJECT_NOT_FOUND = "404 Project Not Found"
GROUP_NOT_FOUND = "404 Group Not Found"
PACKAGE_NOT_FOUND = "404 Package Not Found"
NAME_TAKEN = "403 Forbidden - Package already exists in another project"
CREATED = {"message": "201 Created"}
# Group pages merge at most this many projects' pages for one name (each is one backend request).
MAX_GROUP_PROJECTS = 20
DOCUMENT_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)
_DOCUMENT_HEADERS_DROPPED = ("If-None-Match", "If-Modified-Since", "Range", "If-Range", "Accept-Encoding")


# --- who may do what on which project -------------------------------------------------------------------------


async def _principal(request: web.Request) -> Principal:
    principal = await authn.authenticate(request, principals.Mode.PACKAGES)
    if principal is None:
        raise Unauthorized(UNAUTHORIZED)
    request[PRINCIPAL] = principals.describe(principal)
    return principal


def _deny(principal: Principal, decision: Denied, not_found: str) -> NoReturn:
    log.info("package request denied: %s (%s)", decision.reason, principals.describe(principal))
    if isinstance(principal, Anonymous) or decision.kind is Deny.UNAUTHENTICATED:
        # Package clients send credentials only when challenged (Maven) or not at all: anonymous → 401.
        raise Unauthorized(UNAUTHORIZED)
    if decision.kind is Deny.NOT_FOUND:
        raise NotFound(not_found)
    raise Forbidden("403 Forbidden")


async def _project(request: web.Request, op: Operation) -> tuple[Principal, Project]:
    principal = await _principal(request)
    store = request.app[STORE]
    ref = parse_ref(request.match_info["id"], project=True)
    project = None
    if isinstance(ref, int):
        project = await store.get_project(ref)
    elif ref is not None:
        project = await store.get_project_by_path(ref)
    if project is None:
        if isinstance(principal, Anonymous):
            raise Unauthorized(UNAUTHORIZED)  # no existence oracle for anonymous callers
        raise NotFound(PROJECT_NOT_FOUND)
    decision = await access.authorize(store, principal, Target.of_project(project), op)
    if isinstance(decision, Denied):
        _deny(principal, decision, PROJECT_NOT_FOUND)
    return principal, project


async def _group(request: web.Request) -> tuple[Principal, Namespace]:
    """A group-level endpoint: deploy tokens of exactly this group only (policy.reaches, §4)."""
    principal = await _principal(request)
    store = request.app[STORE]
    ref = parse_ref(request.match_info["id"], project=False)
    group = None
    if isinstance(ref, int):
        group = await store.get_namespace(ref)
    elif ref is not None:
        group = await store.get_namespace_by_path(ref)
    if group is None or group.kind != "group":
        if isinstance(principal, Anonymous):
            raise Unauthorized(UNAUTHORIZED)
        raise NotFound(GROUP_NOT_FOUND)
    decision = await access.authorize(store, principal, Target.of_group(group), Operation.PACKAGE_READ)
    if isinstance(decision, Denied):
        _deny(principal, decision, GROUP_NOT_FOUND)
    return principal, group


async def _readable(request: web.Request, principal: Principal, project: Project) -> bool:
    decision = await access.authorize(request.app[STORE], principal, Target.of_project(project), Operation.PACKAGE_READ)
    return not isinstance(decision, Denied)


def _in_group(project: Project, group: Namespace) -> bool:
    return project.namespace.kind == "group" and group.id in project.namespace.traversal_ids


async def _group_projects(request: web.Request, principal: Principal, group: Namespace) -> list[Project]:
    """Projects of the group and its subgroups that the caller may read packages of."""
    store = request.app[STORE]
    found = await store.list_projects_in([g.id for g in await store.list_group_tree(group.id)])
    return [p for p in found if await _readable(request, principal, p)]


async def _group_owners(
    request: web.Request, principal: Principal, group: Namespace, fmt: Format, name: str
) -> list[Project]:
    """Readable projects of the group holding `name`, most recent upload first."""
    store = request.app[STORE]
    out = []
    for owner in await store.package_name_owners(fmt, name):
        project = await store.get_project(owner.project_id)
        if project is not None and _in_group(project, group) and await _readable(request, principal, project):
            out.append(project)
        if len(out) >= MAX_GROUP_PROJECTS:
            break
    return out


# --- backends and ownership ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _backends(config: PackagesConfig) -> dict[Format, Backend]:
    return packages.backends(config)


def _backend(request: web.Request, fmt: Format) -> Backend:
    backend = _backends(request.app[CONFIG].packages)[fmt]
    if not backend.configured:
        raise NotFound(f"404 Not Found - the {fmt} package registry is not configured")
    return backend


def _store(config: Config) -> PackageStore:
    return PackageStore(Path(config.storage.data_dir) / "packages")


async def _check_owner(request: web.Request, backend: Backend, name: str, project: Project) -> None:
    """Flat backend: only the project that owns a name may read it; to everyone else it does not exist."""
    if not backend.flat:
        return
    owners = await request.app[STORE].package_name_owners(backend.format, name)
    if not any(o.project_id == project.id for o in owners):
        raise NotFound(PACKAGE_NOT_FOUND)


async def _claim(request: web.Request, backend: Backend, name: str, project: Project) -> None:
    """Record the upload's name for the project; on a flat backend the first project to upload a name owns it."""
    owner = await request.app[STORE].claim_package_name(
        format=backend.format,
        name=name,
        project_id=project.id,
        exclusive=backend.flat,
        now=request.app[CLOCK].now(),
    )
    if owner != project.id:
        raise Forbidden(NAME_TAKEN)


def _auth(backend: Backend) -> str | None:
    """The gateway's own Authorization value for the backend (never the client's)."""
    if not (backend.username or backend.password):
        return None
    return proxy.basic_authorization(backend.username, backend.password)


def _root(backend: Backend, project: Project) -> str:
    return backend.root(project.id, project.full_path)


def _client_origin(request: web.Request) -> str:
    return request.app[CLIENTS].origin(request)


def _public_base(request: web.Request, marker: str) -> str:
    """The gateway URL of this format's endpoints as the client addressed them (same `:id` form, so npm's
    per-path `_authToken` keeps matching): external_url when set, else the request's own origin."""
    external = request.app[CONFIG].server.external_url.rstrip("/")
    raw = request.raw_path
    return (external or _client_origin(request)) + raw[: raw.index(marker) + len(marker)]


def _project_base(request: web.Request, project: Project, fmt: str) -> str:
    external = request.app[CONFIG].server.external_url.rstrip("/")
    return f"{external or _client_origin(request)}/api/v4/projects/{project.id}/packages/{fmt}/"


def _refuse_backend_challenges(status: int, headers: CIMultiDict[str]) -> None:
    # A 401 from a backend means the gateway's own backend credentials are wrong: the client can do nothing.
    if status in (401, 407):
        raise BadGateway("502 Bad Gateway - the package backend refused the gateway's credentials")


async def _forward(
    request: web.Request, backend: Backend, url: str, *, upload: bool, on_error: proxy.ErrorHook | None = None
) -> web.StreamResponse:
    forwarder = request.app[PROXY]
    name = f"{backend.format} package"
    if not upload:
        return await forwarder.forward(
            request,
            url,
            backend=name,
            authorization=_auth(backend),
            on_headers=_refuse_backend_challenges,
            on_error=on_error,
            timeouts=proxy.Timeouts(read=request.app[CONFIG].packages.timeout),
        )
    maximum = request.app[CONFIG].packages.max_upload_size
    check_length(request.content_length, maximum)
    limit = Limit(maximum)
    if request.content_length is not None:
        # Announced and within the limit (checked above): the forwarder moves exactly that many bytes, socket to
        # socket when large (proxy.RelayedUpload), and a body that ends early fails the backend request.
        return await _forward_upload(request, backend, url, None, limit)
    body = limited(request.content, limit, expected=request.content_length)
    return await _forward_upload(request, backend, url, body, limit)


async def _forward_upload(
    request: web.Request,
    backend: Backend,
    url: str,
    body: AsyncIterator[bytes] | None,
    limit: Limit,
    *,
    content_type: str | None = None,
    on_error: proxy.ErrorHook | None = None,
) -> web.StreamResponse:
    try:
        return await request.app[PROXY].forward(
            request,
            url,
            backend=f"{backend.format} package",
            authorization=_auth(backend),
            on_headers=_refuse_backend_challenges,
            body=body,
            content_type=content_type,
            on_error=on_error,
            timeouts=proxy.Timeouts(read=request.app[CONFIG].packages.timeout),
        )
    except (HTTPFailure, aiohttp.ClientError, OSError):
        if limit.refused is not None:
            # The gateway stopped the body (more than the limit, unannounced; a PyPI form going on after its file):
            # the backend got a cut-off body, the client gets why.
            raise limit.refused from None
        raise


async def _fetch_document(request: web.Request, backend: Backend, url: str, accept: str) -> bytes | None:
    """A small document read whole (bounded by packages.max_document_size); None when the backend has none."""
    headers = proxy.request_headers(request)
    for name in _DOCUMENT_HEADERS_DROPPED:
        headers.popall(name, None)
    headers[hdrs.ACCEPT] = accept
    headers[hdrs.ACCEPT_ENCODING] = "identity"  # rewritten as text: no compressed bodies
    authorization = _auth(backend)
    if authorization is not None:
        headers[hdrs.AUTHORIZATION] = authorization
    maximum = request.app[CONFIG].packages.max_document_size
    session = request.app[PROXY].session
    try:
        async with session.get(url, headers=headers, allow_redirects=False, timeout=DOCUMENT_TIMEOUT) as resp:
            if resp.status in (404, 410):
                return None
            if resp.status != 200:
                log.warning("%s backend answered %s for a document", backend.format, resp.status)
                raise BadGateway(f"502 Bad Gateway - the {backend.format} backend answered {resp.status}")
            encoding = resp.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise BadGateway(f"502 Bad Gateway - the {backend.format} backend sent an encoded document")
            if (resp.content_length or 0) > maximum:
                raise BadGateway(f"502 Bad Gateway - the {backend.format} document is larger than {maximum} bytes")
            data = bytearray()
            while chunk := await resp.content.read(256 * 1024):
                data += chunk
                if len(data) > maximum:
                    raise BadGateway(f"502 Bad Gateway - the {backend.format} document is larger than {maximum} bytes")
            return bytes(data)
    except TimeoutError:
        raise GatewayTimeout(f"504 Gateway Timeout - the {backend.format} backend did not answer in time") from None
    except (aiohttp.ClientError, OSError):
        raise BadGateway(f"502 Bad Gateway - the {backend.format} backend is unreachable or failed") from None


# --- the embedded store ---------------------------------------------------------------------------------------------


class DuplicateFile(HTTPFailure):
    """An immutable file uploaded again with different bytes (the first upload stays)."""

    status = 409


def _content_type(filename: str) -> str:
    return "application/xml" if filename.endswith((".xml", ".pom")) else "application/octet-stream"


class _SentFile(web.FileResponse):
    """A FileResponse sent by its handler: aiohttp prepares what a handler returns, and FileResponse.prepare would
    send the file a second time; StreamResponse.prepare only hands back the writer of a response already sent."""

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return await web.StreamResponse.prepare(self, request)
        return await super().prepare(request)


async def _file_response(request: web.Request, stored: StoredFile, filename: str) -> web.FileResponse:
    """The file, sent before the handler returns: FileResponse streams from disk (sendfile where possible) and
    answers HEAD and Range itself. Sent here, not after the handler, so that the access log's duration and status
    cover the transfer (a client leaving mid-download is a 499, not a 200 of 9 ms: found by a README walkthrough)."""
    response = _SentFile(
        stored.blob,
        chunk_size=256 * 1024,
        headers={
            hdrs.CONTENT_TYPE: _content_type(filename),
            hdrs.CONTENT_DISPOSITION: f'attachment; filename="{filename}"',
            "X-Checksum-Sha256": stored.sha256,
        },
    )
    try:
        await response.prepare(request)
    except ConnectionError:
        # sendfile(2) met the client's reset before the transport did: closed now, so it counts as the client's
        # leaving (a 499), not as a failure here.
        if request.transport is not None:
            request.transport.abort()
        raise
    return response


async def _store_put(
    request: web.Request, fmt: Format, project: Project, segments: tuple[str, ...], *, mutable: bool
) -> web.Response:
    maximum = request.app[CONFIG].packages.max_upload_size
    check_length(request.content_length, maximum)
    body = limited(request.content, Limit(maximum), expected=request.content_length)
    # SHA-256 is recorded for every file; Maven also reads a .sha1 after every download, so it is computed while
    # streaming too. md5 and sha512 are computed from the blob when first asked for (rare; md5 is the slowest).
    algorithms = ("sha256", "sha1") if fmt == "maven" else ("sha256",)
    try:
        result = await _store(request.app[CONFIG]).put(
            fmt, project.id, segments, body, mutable=mutable, algorithms=algorithms
        )
    except Conflict:
        raise DuplicateFile(f"409 Conflict - {'/'.join(segments)} already exists with different content") from None
    return web.json_response(
        CREATED if result.created else {"message": "200 OK - already stored"}, status=201 if result.created else 200
    )


# --- generic ------------------------------------------------------------------------------------------------------


def _generic(request: web.Request) -> packages.GenericFile:
    m = request.match_info
    found = packages.generic_file(m["name"], m["version"], m["file"])
    if isinstance(found, str):
        raise BadRequest(f"400 Bad request - {found}")
    return found


async def generic_get(request: web.Request) -> web.StreamResponse:
    _, project = await _project(request, Operation.PACKAGE_READ)
    file = _generic(request)
    backend = _backend(request, "generic")
    if backend.embedded:
        stored = _store(request.app[CONFIG]).get("generic", project.id, file.segments)
        if stored is None:
            raise NotFound("404 Not Found")
        return await _file_response(request, stored, file.file)
    await _check_owner(request, backend, file.name, project)
    return await _forward(request, backend, packages.join(_root(backend, project), file.segments), upload=False)


async def generic_put(request: web.Request) -> web.StreamResponse:
    _, project = await _project(request, Operation.PACKAGE_WRITE)
    file = _generic(request)
    backend = _backend(request, "generic")
    await _claim(request, backend, file.name, project)
    if backend.embedded:
        return await _store_put(request, "generic", project, file.segments, mutable=False)
    return await _forward(request, backend, packages.join(_root(backend, project), file.segments), upload=True)


# --- Maven ----------------------------------------------------------------------------------------------------------


def _maven(request: web.Request) -> packages.MavenPath:
    found = packages.maven_path(request.match_info["path"])
    if isinstance(found, str):
        raise BadRequest(f"400 Bad request - {found}")
    return found


async def _maven_serve(request: web.Request, project: Project, path: packages.MavenPath) -> web.StreamResponse | None:
    stored = _store(request.app[CONFIG]).get("maven", project.id, path.base)
    if stored is None:
        return None
    if path.checksum is None:
        return await _file_response(request, stored, path.segments[-1])
    # Checksum files are answered from the digests recorded at upload, never stored separately.
    return web.Response(text=await PackageStore.digest(stored, path.checksum), content_type="text/plain")


async def _maven_key(request: web.Request, backend: Backend, path: packages.MavenPath, project: Project) -> str:
    """The name a path is kept under for `project` on a flat backend. `X/maven-metadata.xml` is ambiguous (see
    MavenPath.enclosing): to the holder of the folder above, it is that package's version metadata, so no claim of
    X by another project (made first, of a future version) keeps the owner from writing it; to anyone else, X. A
    project may not take X inside another project's package unless X is already its own name (its artifact X,
    whose jars it uploaded), found by reviews of two earlier rules; docs/packages.md."""
    if not backend.flat or path.enclosing is None:
        return path.package
    store = request.app[STORE]
    enclosing = await store.package_name_owners("maven", path.enclosing)
    if any(o.project_id == project.id for o in enclosing):
        return path.enclosing
    if enclosing and not any(
        o.project_id == project.id for o in await store.package_name_owners("maven", path.package)
    ):
        raise Forbidden(f"403 Forbidden - {path.package} is inside the package {path.enclosing} of another project")
    return path.package


async def maven_get(request: web.Request) -> web.StreamResponse:
    _, project = await _project(request, Operation.PACKAGE_READ)
    path = _maven(request)
    backend = _backend(request, "maven")
    if backend.embedded:
        served = await _maven_serve(request, project, path)
        if served is None:
            raise NotFound("404 Not Found")
        return served
    try:
        key = await _maven_key(request, backend, path, project)
    except Forbidden:
        raise NotFound(PACKAGE_NOT_FOUND) from None  # another project's: to a reader it does not exist
    await _check_owner(request, backend, key, project)
    return await _forward(request, backend, packages.join(_root(backend, project), path.segments), upload=False)


async def maven_put(request: web.Request) -> web.StreamResponse:
    _, project = await _project(request, Operation.PACKAGE_WRITE)
    path = _maven(request)
    backend = _backend(request, "maven")
    await _claim(request, backend, await _maven_key(request, backend, path, project), project)
    if not backend.embedded:
        return await _forward(request, backend, packages.join(_root(backend, project), path.segments), upload=True)
    if path.checksum is None:
        return await _store_put(request, "maven", project, path.segments, mutable=path.mutable)
    # A checksum file Maven uploads after each file: verified against what was stored, so corruption in transit
    # is an error here instead of at the next download (GitLab verifies the .sha1 as well).
    stored = _store(request.app[CONFIG]).get("maven", project.id, path.base)
    if stored is None:
        raise BadRequest(f"400 Bad request - {'/'.join(path.base)} was not uploaded before its checksum")
    sent = (await request.content.read(1024)).decode("ascii", "replace").strip().split(" ")[0].lower()
    if sent != await PackageStore.digest(stored, path.checksum):
        raise BadRequest(f"400 Bad request - the {path.checksum} checksum does not match the stored file")
    return web.json_response(CREATED, status=201)


async def maven_group_get(request: web.Request) -> web.StreamResponse:
    principal, group = await _group(request)
    path = _maven(request)
    backend = _backend(request, "maven")
    # On a flat backend a version folder's metadata is kept under the package above it (_maven_key).
    names = [path.enclosing, path.package] if backend.flat and path.enclosing is not None else [path.package]
    found = [p for name in names for p in await _group_owners(request, principal, group, "maven", name)]
    for project in found:
        if not backend.embedded:
            return await _forward(request, backend, packages.join(_root(backend, project), path.segments), upload=False)
        served = await _maven_serve(request, project, path)
        if served is not None:
            return served
    raise NotFound("404 Not Found")


# --- PyPI -----------------------------------------------------------------------------------------------------------


def _html(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="text/html", charset="utf-8")


def _pypi_name(request: web.Request) -> str:
    name = packages.pypi_name(request.match_info["name"])
    if name is None:
        raise NotFound(PACKAGE_NOT_FOUND)
    return name


def _pypi_error(status: int, content_type: str, body: bytes) -> HTTPFailure:
    """pypiserver's error (a duplicate upload, a missing file) in the gateway's words: its HTML page names its own
    address, and twine shows only the reason phrase (set by pypi_upload)."""
    said = packages_documents.backend_message(content_type, body) or "the PyPI backend refused the request"
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:  # a status of the backend's own invention
        phrase = "Error"
    log.info("pypi package backend answered %d: %s", status, said)
    return BackendRefused(status, f"{status} {phrase} - {said}")


async def pypi_upload(request: web.Request) -> web.StreamResponse:
    try:
        return await _pypi_upload(request)
    except HTTPFailure as exc:
        # twine prints the status line's reason phrase, not the body: as PyPI's warehouse does, the phrase carries
        # the message ("HTTPError: 403 Forbidden from <url>" then "Package already exists in another project").
        said = exc.message.removeprefix(f"{exc.status} ")
        exc.reason = packages_documents.printable(said.partition(" - ")[2] or said) or None
        raise


async def _pypi_upload(request: web.Request) -> web.StreamResponse:
    _, project = await _project(request, Operation.PACKAGE_WRITE)
    backend = _backend(request, "pypi")
    config = request.app[CONFIG].packages
    check_length(request.content_length, config.max_upload_size)
    mime = parse_mimetype(request.headers.get(hdrs.CONTENT_TYPE, ""))
    if f"{mime.type}/{mime.subtype}" != "multipart/form-data":
        raise BadRequest("400 Bad request - a PyPI upload is a multipart/form-data body")
    boundary = pypi_form.boundary(mime.parameters.get("boundary", ""))
    head, upload = await pypi_form.read_head(request.content, boundary, config.max_document_size)
    if upload.action != "file_upload":
        raise BadRequest("400 Bad request - only the file_upload action is supported")
    name = packages.pypi_name(upload.name)
    if name is None:
        raise BadRequest("400 Bad request - name is invalid")
    if packages.pypi_file_project(upload.filename) != name:
        # pypiserver files a distribution by its file name alone: a file must carry the name being claimed.
        raise BadRequest(f"400 Bad request - the file {upload.filename[:255]} is not a distribution of {name}")
    await _claim(request, backend, name, project)
    limit = Limit(config.max_upload_size)
    body = limit.watched(
        pypi_form.checked(
            limited(request.content, limit, head=head, expected=request.content_length), boundary, upload.data_start
        )
    )
    return await _forward_upload(
        request,
        backend,
        _root(backend, project),
        body,
        limit,
        content_type=pypi_form.content_type(boundary),
        on_error=_pypi_error,
    )


async def pypi_index(request: web.Request) -> web.StreamResponse:
    _, project = await _project(request, Operation.PACKAGE_READ)
    backend = _backend(request, "pypi")
    if backend.flat:
        names = [n.name for n in await request.app[STORE].list_package_names("pypi", [project.id])]
    else:
        doc = await _fetch_document(request, backend, _root(backend, project) + "simple/", "text/html")
        names = packages_documents.pypi_index_names(doc.decode("utf-8", "replace")) if doc else []
    base = _public_base(request, "/packages/pypi/")
    links: list[Link] = [(f"{base}simple/{n}/", n, ()) for n in names]
    return _html(packages_documents.simple_page("Simple index", links))


async def _project_links(
    request: web.Request, backend: Backend, project: Project, name: str, files_base: str
) -> list[Link]:
    root = _root(backend, project)
    page_url = f"{root}simple/{name}/"
    doc = await _fetch_document(request, backend, page_url, "text/html")
    if doc is None:
        return []
    return packages_documents.pypi_project_links(
        doc.decode("utf-8", "replace"),
        page_url=page_url,
        roots=packages_documents.origin_roots(root, _client_origin(request)),
        name=name,
        files_base=files_base,
    )


async def pypi_package(request: web.Request) -> web.StreamResponse:
    name = _pypi_name(request)
    _, project = await _project(request, Operation.PACKAGE_READ)
    backend = _backend(request, "pypi")
    await _check_owner(request, backend, name, project)
    links = await _project_links(request, backend, project, name, _public_base(request, "/packages/pypi/") + "files/")
    if not links:
        raise NotFound(PACKAGE_NOT_FOUND)
    return _html(packages_documents.simple_page(f"Links for {name}", links))


async def pypi_file(request: web.Request) -> web.StreamResponse:
    _, project = await _project(request, Operation.PACKAGE_READ)
    segments = [s for s in request.match_info["path"].split("/")]
    if not all(packages.segment_ok(s) for s in segments):
        raise NotFound("404 Not Found")
    name = packages.pypi_file_project(segments[-1])
    if name is None:
        raise NotFound("404 Not Found")
    backend = _backend(request, "pypi")
    await _check_owner(request, backend, name, project)
    url = packages.join(_root(backend, project), segments)
    return await _forward(request, backend, url, upload=False, on_error=_pypi_error)


async def pypi_group_index(request: web.Request) -> web.StreamResponse:
    principal, group = await _group(request)
    _backend(request, "pypi")
    projects = await _group_projects(request, principal, group)
    records = await request.app[STORE].list_package_names("pypi", [p.id for p in projects])
    base = _public_base(request, "/packages/pypi/")
    links: list[Link] = [(f"{base}simple/{n}/", n, ()) for n in sorted({r.name for r in records})]
    return _html(packages_documents.simple_page("Simple index", links))


async def pypi_group_package(request: web.Request) -> web.StreamResponse:
    name = _pypi_name(request)
    principal, group = await _group(request)
    backend = _backend(request, "pypi")
    links: list[Link] = []
    seen: set[str] = set()
    for project in await _group_owners(request, principal, group, "pypi", name):
        # Files are linked at project level: the caller reads them with the same credentials there.
        for link in await _project_links(
            request, backend, project, name, _project_base(request, project, "pypi") + "files/"
        ):
            if link[1] not in seen:
                seen.add(link[1])
                links.append(link)
    if not links:
        raise NotFound(PACKAGE_NOT_FOUND)
    return _html(packages_documents.simple_page(f"Links for {name}", links))


# --- npm ------------------------------------------------------------------------------------------------------------


async def npm_get(request: web.Request) -> web.StreamResponse:
    path = request.match_info["path"]
    _, project = await _project(request, Operation.PACKAGE_READ)
    backend = _backend(request, "npm")
    root = _root(backend, project)
    tarball = packages.npm_tarball(path)
    if tarball is not None:
        name, file = tarball
        await _check_owner(request, backend, name, project)
        return await _forward(request, backend, f"{root}{name}/-/{packages.join('', [file])}", upload=False)
    document = packages.npm_name(path)
    if document is None:
        raise NotFound("404 Not Found")
    name = document
    await _check_owner(request, backend, name, project)
    accept = request.headers.get(hdrs.ACCEPT, "application/json")
    doc = await _fetch_document(request, backend, root + packages.npm_document_path(name), accept)
    if doc is None:
        raise NotFound("404 Not Found")
    try:
        body = packages_documents.npm_document(
            doc,
            roots=packages_documents.origin_roots(root, _client_origin(request)),
            gateway_base=_public_base(request, "/packages/npm/"),
        )
    except (ValueError, RecursionError):
        raise BadGateway("502 Bad Gateway - the npm backend sent an invalid package document") from None
    return web.Response(body=body, content_type="application/json")


async def npm_put(request: web.Request) -> web.StreamResponse:
    path = request.match_info["path"]
    _, project = await _project(request, Operation.PACKAGE_WRITE)
    backend = _backend(request, "npm")
    name = packages.npm_name(path)
    if name is None:
        raise BadRequest("400 Bad request - package name is invalid")
    config = request.app[CONFIG].packages
    check_length(request.content_length, config.max_upload_size)
    await _claim(request, backend, name, project)
    limit = Limit(config.max_upload_size)
    body = limit.watched(
        npm_publish.checked(
            limited(request.content, limit, expected=request.content_length), name, config.max_document_size
        )
    )
    url = _root(backend, project) + packages.npm_document_path(name)
    # JSON in UTF-8 (RFC 8259 §8.1), as the checker read it: a charset parameter would have the registry decode
    # other strings than the ones checked.
    return await _forward_upload(request, backend, url, body, limit, content_type="application/json")
