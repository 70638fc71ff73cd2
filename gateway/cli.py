"""The operators' tool: `gateway [--config FILE] init | serve | migrate | store copy | backup | restore | users ...`.

User mistakes end with `gateway: error: <message>` on stderr and a non-zero exit (2: configuration, 1: other).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from gateway import audit, encryption_keys, key_watch, log_output, secretbox, signing_keys, tokens, users
from gateway import config as config_module
from gateway.config import Config
from gateway.errors import ConfigError, GatewayError, HTTPFailure, StoreError
from gateway.store import open_store
from gateway.store.base import AuthFailures, KeyHolder, Store

if TYPE_CHECKING:
    from aiohttp import web

    from gateway import tls
    from gateway.signing_keys import SigningKey

log = logging.getLogger("gateway")
T = TypeVar("T")
# gateway.metrics.MULTIPROC_ENV, spelled here: importing gateway.metrics would import prometheus-client too early.
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

ROOT_USERNAME = "root"
ROOT_TOKEN_NAME = "gateway init"  # noqa: S105 - a token name, not a secret
CLI_TOKEN_NAME = "gateway cli"  # noqa: S105 - a token name, not a secret


class CommandError(GatewayError):
    """A command could not do what was asked (exit 1, message on stderr)."""


def _say(*parts: object) -> None:
    print(*parts, flush=True)


def _note(message: str) -> None:
    print(f"gateway: {message}", file=sys.stderr, flush=True)


def _many(count: int, one: str, several: str = "") -> str:
    return f"{count} {one if count == 1 else several or one + 's'}"


def _now() -> datetime:
    return datetime.now(UTC)


async def _audit(store: Store, now: datetime, change: audit.Change) -> None:
    """A change made here goes into the audit trail as the API's would (audit.py's wording), its author the
    operating-system account that ran the command: the trail has no hole for changes made at a shell."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (a bare container)
        login = f"uid {os.getuid()}"
    event = audit.change_event(now, audit.operator(login), change, user_agent="gateway-cli", ip_address=None)
    await store.insert_audit_events([event])


def _hasher(config: Config) -> users.PasswordHasher:
    return users.PasswordHasher(config.security.password_memory_kib, config.security.password_iterations)


async def _with_store(config: Config, work: Callable[[Store], Awaitable[T]], *, migrate: bool = True) -> T:
    store = await open_store(config)
    try:
        if migrate:
            await store.migrate()
        return await work(store)
    finally:
        await store.close()


# --- init ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InitResult:
    created: list[str]
    schema_version: int
    root_token: str | None
    root_password: str | None


async def initialize(config: Config, *, create_root: bool = True) -> InitResult:
    """Create what is missing (data dir, encryption key, database, signing key and certificate, root); idempotent."""
    created: list[str] = []
    data_dir = Path(config.storage.data_dir)
    if not data_dir.exists():
        data_dir.mkdir(parents=True, mode=0o700)
        created.append(f"data directory {data_dir}")
    key_file = Path(config.storage.encryption_key)
    if secretbox.ensure_key_file(key_file):
        created.append(f"encryption key {key_file}")
    if config.git.backend == "embedded":
        repositories = Path(config.git.repositories)
        if not repositories.exists():
            repositories.mkdir(parents=True)
            created.append(f"repositories directory {repositories}")
    new_files = signing_keys.ensure(
        Path(config.registry.signing_key),
        Path(config.registry.certificate),
        algorithm=config.registry.algorithm,
        common_name=config.registry.issuer,
    )
    names = {
        Path(config.registry.signing_key): "registry signing key",
        Path(config.registry.certificate): "registry certificate",
    }
    created.extend(f"{names[path]} {path}" for path in new_files)

    async def work(store: Store) -> InitResult:
        version = await store.migrate()
        if not create_root or await store.count_users() > 0:
            return InitResult(created, version, None, None)
        password = secrets.token_urlsafe(18)
        now = _now()
        root = await users.create_user(
            store,
            _hasher(config),
            username=ROOT_USERNAME,
            name="Administrator",
            password=password,
            is_admin=True,
            now=now,
        )
        pat = await users.create_pat(
            store, user=root, name=ROOT_TOKEN_NAME, scopes=users.PAT_SCOPES, expires_at=None, now=now
        )
        await _audit(store, now, audit.user_created(root))
        await _audit(store, now, audit.pat_created(pat.token, root))
        created.append(f"admin user {ROOT_USERNAME}")
        return InitResult(created, version, pat.secret, password)

    return await _with_store(config, work, migrate=False)


def cmd_init(config: Config, args: argparse.Namespace) -> int:
    result = asyncio.run(initialize(config))
    for item in result.created:
        _say(f"created {item}")
    if not result.created:
        _say("nothing to do: already initialized")
    key = signing_keys.load(
        Path(config.registry.signing_key), Path(config.registry.certificate), algorithm=config.registry.algorithm
    )
    _say(f"database schema version {result.schema_version}")
    _say(f"registry certificate {config.registry.certificate} ({key.algorithm}, kid {key.kid})")
    if result.root_token is not None:
        # The password goes to stderr, marked, so that `gateway init | tail -n 1` captures only the token.
        _note(f"root password (shown only now, for the web UI): {result.root_password}")
        _say(f"admin user {ROOT_USERNAME}: personal access token (shown only now) on the next line")
        _say(result.root_token)
    return 0


# --- serve -----------------------------------------------------------------------------------------------------


def configure_logging(level: str, fields: Mapping[str, Any] | None = None) -> None:
    handler = log_output.LineBuffer()
    handler.setFormatter(log_output.JSONFormatter(fields))
    root = logging.getLogger()
    for old in root.handlers:
        old.close()  # writes what a previous configuration still holds (a worker reconfigures after its fork)
    root.handlers[:] = [handler]
    # The JSON lines carry none of these record fields: skip computing them on every record (logging docs,
    # "Optimization"); _srcfile = None skips walking the stack for the caller's file and line.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    root.setLevel(level.upper())
    # The access log (a line per request) skips the logging module's records: this handler is its only reader.
    log_output.access_lines = log_output.AccessLines(handler, fields)
    # aiohttp's own access log would duplicate ours (middleware.py) and its format may include query strings.
    logging.getLogger("aiohttp.access").disabled = True
    # aiosqlite logs every statement with its parameters at DEBUG: SHA-256 digests of presented secrets (a password
    # is looked up as a token first; an unsalted digest of a password can be cracked offline), password hashes,
    # encrypted tokens. Never below INFO, whatever log.level says (tests/e2e/test_logs_no_secrets.py).
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, root.level))


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--listen: expected HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


def _url(host: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


@dataclasses.dataclass
class Preloaded:
    """What the supervisor loaded before it forked, and loads again on its SIGHUP: a worker started later begins
    with it instead of reading the files itself, so a worker restarted after a crash never fails on key files that
    a reload refused (another algorithm before a restart, a half-written certificate renewal)."""

    key: SigningKey | None
    certificate: tls.Reloader | None
    keyring: encryption_keys.Keyring

    def reload(self) -> None:
        from gateway.registry_signing import load_key

        if self.certificate is not None:
            self.certificate.reload()
        try:
            self.key = load_key(self.config)
        except GatewayError as exc:
            log.error("registry signing key not reloaded, the one loaded before still signs: %s", exc)
        try:
            self.keyring = encryption_keys.load_keyring(Path(self.config.storage.encryption_key), strict=False)
        except ConfigError as exc:
            log.error("encryption keys not reloaded, the ones loaded before stay in use: %s", exc)

    config: Config = dataclasses.field(repr=False, default_factory=Config)


async def serve(
    config: Config, host: str, port: int, *, sockets: Sequence[socket.socket] = (), preloaded: Preloaded | None = None
) -> None:
    """Serve until SIGTERM/SIGINT on host:port, or on already listening `sockets` (a worker of gateway/workers.py,
    which starts with what its supervisor `preloaded`)."""
    # Imported here: the other commands do not need aiohttp, and each CLI call starts faster without it.
    from aiohttp import web

    from gateway import key_holders, key_rotation, proxy, service_manager, tls
    from gateway.app import ENCRYPTION, REGISTRY_SIGNING, create_app
    from gateway.server import Runner, settle_heap

    reloader = preloaded.certificate if preloaded is not None else tls.Reloader.load(config.server)
    context = reloader.context if reloader is not None else None
    app = create_app(
        config,
        signing_key=preloaded.key if preloaded is not None else None,
        keyring=preloaded.keyring if preloaded is not None else None,
        migrated=preloaded is not None,
    )
    # auto_decompress=False: git sends gzip request bodies that must reach `git http-backend` untouched
    # (shared/notes/git.md §2). access_log=None: the request middleware writes the access log.
    deadline = config.server.shutdown_timeout
    runner = Runner(
        app,
        auto_decompress=False,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=deadline,
        # Request bodies (uploads, pushes) arrive in larger pieces: fewer pause/resume cycles and loop turns per
        # megabyte than aiohttp's 64 KiB default; memory stays bounded per connection.
        read_bufsize=proxy.READ_BUFFER,
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop_signal() -> None:
        # A worker gets the stop twice when the whole process group is signalled (`kill -- -PGID`, systemd stopping
        # the unit): once itself, once forwarded by the supervisor, which also escalates if the stop takes too long.
        # Only a lone server takes a second signal (a second Ctrl-C) as "now": it cuts what is still in flight.
        if not stop.is_set():
            stop.set()
        elif not sockets:
            log.warning("second stop signal: cutting the requests still in flight")
            _cut_connections(runner)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_signal)
    # SIGHUP (`systemctl reload`, a certbot deploy hook, after a step of `gateway registry-key` or `encryption-key`):
    # the TLS certificate, the registry signing key and the encryption keys again; never the end of the server.

    reporter = key_holders.Reporter(app)
    reports: set[asyncio.Task[None]] = set()

    def reload() -> None:
        log.info("SIGHUP: reloading the TLS certificate, the registry signing key and the encryption keys")
        if reloader is not None:
            reloader.reload()
        app[REGISTRY_SIGNING].reload()
        app[ENCRYPTION].reload()
        reported = loop.create_task(reporter.report())  # a rotation step waiting on this process goes ahead sooner
        reports.add(reported)
        reported.add_done_callback(reports.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    watching = asyncio.create_task(_watch_certificate(reloader)) if reloader else None
    # Each step of a key rotation reaches this process within key_watch.CHECK_INTERVAL, signalled or not.
    key_files = [
        key_watch.Watched(encryption_keys.files(Path(config.storage.encryption_key)), app[ENCRYPTION].reload),
        key_watch.Watched(key_rotation.files(config.registry), app[REGISTRY_SIGNING].reload),
    ]
    watching_keys: asyncio.Task[None] | None = None
    try:
        # Key files changed since they were loaded (by create_app while the store opened and migrated, or by the
        # supervisor, maybe long ago) and before the watch above took its first look: loaded now, before the first
        # report and the first request. The files' active encryption key wins over a supervisor's (`fresh`).
        if preloaded is not None and reloader is not None:
            reloader.reload(only_if_changed=True)
        app[REGISTRY_SIGNING].reload()
        app[ENCRYPTION].reload(fresh=True)
        # What keys it holds, for the rotation steps (key_holders.py); again after each look at the files.
        await reporter.report()
        sites: list[web.BaseSite] = [web.SockSite(runner, sock, ssl_context=context) for sock in sockets]
        sites = sites or [web.TCPSite(runner, host, port, ssl_context=context)]
        for site in sites:
            try:
                await site.start()
            except OSError as exc:
                raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        frozen = settle_heap()  # the app is built and listening: what exists now lives as long as the server
        watching_keys = asyncio.create_task(key_watch.watch(key_files, reporter.report))
        if sockets:
            log.info("worker ready (pid %d)", os.getpid())  # the supervisor logged "listening on"
        else:
            for address in runner.addresses:
                log.info("listening on %s", _url(str(address[0]), int(address[1]), "https" if context else "http"))
            service_manager.notify("READY=1")
        log.info("startup heap settled: %d objects frozen out of full garbage collections", frozen)
        await stop.wait()
        if not sockets:
            service_manager.notify("STOPPING=1")
        log.info("shutting down")  # requests in flight get server.shutdown_timeout seconds (below)
    finally:
        if watching is not None:
            watching.cancel()
        if watching_keys is not None:
            # No report after `forget` (a look of the watch, a SIGHUP while requests drain), or this process would
            # hold rotations back until its report aged out.
            for task in (watching_keys, *reports):
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            await reporter.forget()
        # cleanup() closes the listening sockets first (new connections are refused), then waits for requests in
        # flight. aiohttp waits `shutdown_timeout` once for them and once more after cancelling only their request
        # bodies, so a download could run for twice the deadline: at the deadline, cut what is left ourselves.
        # The signal handlers stay meanwhile: a second stop signal must not end the process by its default action.
        cut = loop.call_later(deadline, _cut_connections, runner)
        try:
            await runner.cleanup()
        finally:
            cut.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
                if sockets or sig == signal.SIGHUP:
                    # A worker about to exit: a stop forwarded late must not turn its exit into a kill; and a
                    # reload never ends a server.
                    signal.signal(sig, signal.SIG_IGN)


async def _watch_certificate(reloader: tls.Reloader) -> None:
    """A renewal nobody signalled (certbot without a deploy hook, a mounted Kubernetes secret) is served too."""
    from gateway import tls

    while True:
        await asyncio.sleep(tls.CHECK_INTERVAL)
        reloader.reload(only_if_changed=True)


def _cut_connections(runner: web.AppRunner) -> None:
    """Abort every connection still open at the shutdown deadline: an aborted transfer is an error to its client
    (short Content-Length, no final chunk), never a truncated success; and cancel the handlers still running,
    which kills their git children (cgi.py). Most would stop on their next write, but a download in sendfile(2)
    waits on a socket the abort took out of the event loop: it stopped only at aiohttp's own deadline, 60 s later
    (found by a README walkthrough)."""
    from gateway.middleware import IN_FLIGHT  # not at the top: it imports metrics (see metrics.MULTIPROC_ENV)

    server = runner.server
    connections = list(server.connections) if server is not None else []
    if connections:
        log.warning("shutdown deadline reached: cutting %d connection(s) still in flight", len(connections))
    # Cancelled first: a transfer waiting for its socket's buffer to empty before sendfile(2) then lets go of that
    # wait before the abort's callback would complete it (asyncio raises InvalidStateError the other way round).
    for task in list(runner.app.get(IN_FLIGHT, ())):
        task.cancel()
    for handler in connections:
        transport = handler.transport
        if transport is not None:
            transport.abort()


def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    # A reload asked while the server starts (a certbot hook at boot, `systemctl reload` during a restart) must not
    # end it by SIGHUP's default action: ignored until the server takes it (the loop's handler in a server, the
    # supervisor's sigtimedwait, to which a blocked signal is delivered whatever its disposition).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    host, port = split_listen(args.listen or config.server.listen)
    count = args.workers if args.workers is not None else config.server.workers
    if count < 1:
        raise ConfigError(f"--workers: must be at least 1, got {count}")
    # Every worker sizes what it shares the machine with by the real count (its signing processes: app.py).
    config = dataclasses.replace(config, server=dataclasses.replace(config.server, workers=count))
    configure_logging(config.log.level)
    # Refuse to run on a data dir that `gateway init` has not prepared (create_app also needs the key file),
    # so a wrong --config or data_dir does not silently start an empty gateway.
    if not Path(config.storage.encryption_key).exists():
        raise ConfigError(
            f"storage.encryption_key {config.storage.encryption_key} is missing: run `gateway init` first"
        )
    if count == 1:
        asyncio.run(serve(config, host, port))
        return 0
    return serve_workers(config, host, port, count)


def serve_workers(config: Config, host: str, port: int, count: int) -> int:
    """`count` pre-forked workers on one port (gateway/workers.py); problems common to all are reported once, here."""
    # First of all: prometheus-client picks its storage when first imported (gateway.metrics, imported with
    # gateway.app below). Every worker writes its samples to files in this run's own directory, and a scrape on any
    # worker sums them all (metrics.exposition); removed when the server stops.
    with tempfile.TemporaryDirectory(prefix="gateway-metrics-") as metrics_dir:
        os.environ[METRICS_DIR_ENV] = metrics_dir
        try:
            return _serve_workers(config, host, port, count)
        finally:
            del os.environ[METRICS_DIR_ENV]


def _serve_workers(config: Config, host: str, port: int, count: int) -> int:
    from gateway import metrics, service_manager, tls, workers
    from gateway.registry_signing import load_key

    # Before forking: migrations run once (not raced by N workers), and a bad key file or database fails here with
    # one clear error instead of N crashing workers.
    keyring = encryption_keys.load_keyring(Path(config.storage.encryption_key), strict=False)
    encryption_keys.say_damaged(keyring)
    preloaded = Preloaded(load_key(config), tls.Reloader.load(config.server), keyring, config)
    asyncio.run(_with_store(config, lambda store: store.schema_version()))
    try:
        groups = workers.bind(host, port, count)
    except workers.ListenError as exc:
        raise CommandError(str(exc)) from None
    scheme = "https" if preloaded.certificate is not None else "http"
    for sock in groups[0]:
        address = sock.getsockname()
        log.info("listening on %s", _url(str(address[0]), int(address[1]), scheme))
    log.info("serving with %d worker processes", count)
    # The port is bound and listening: connections wait in its backlog while the workers start.
    service_manager.notify("READY=1")

    def worker_main(slot: int, sockets: Sequence[socket.socket]) -> int:
        configure_logging(config.log.level, {"worker": slot})
        try:
            asyncio.run(serve(config, host, port, sockets=sockets, preloaded=preloaded))
        except GatewayError as exc:
            log.error("worker %d cannot serve: %s", slot, exc)
            return 1
        return 0

    from gateway.server import settle_heap

    settle_heap()  # before the forks: the workers share these pages instead of copying them on their first collection
    stop_timeout = config.server.shutdown_timeout + workers.STOP_GRACE
    supervisor = workers.Supervisor(
        groups, worker_main, stop_timeout=stop_timeout, on_exit=metrics.worker_exited, on_reload=preloaded.reload
    )
    status = supervisor.run()
    log.info("stopped" if status == 0 else "stopped: workers kept dying")
    return status


# --- migrate ---------------------------------------------------------------------------------------------------


def cmd_migrate(config: Config, args: argparse.Namespace) -> int:
    async def work(store: Store) -> int:
        return await store.migrate()

    version = asyncio.run(_with_store(config, work, migrate=False))
    _say(f"schema version {version}")
    return 0


# --- store copy ------------------------------------------------------------------------------------------------


def _database_label(config: Config, url: str) -> str:
    """Where a database is, for messages: the file, or PostgreSQL's host, port and name; never who logs in with what."""
    if url.startswith("sqlite:///"):
        return str(config_module.sqlite_path(config, url))
    parts = urlsplit(url)
    return f"postgresql://{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"


def cmd_store_copy(config: Config, args: argparse.Namespace) -> int:
    """Copy every row of one database into a new, empty one (store/copy.py), e.g. SQLite to PostgreSQL: from
    storage.database `--to` another, or `--from` another into storage.database (a container whose configuration
    already names its new database, e.g. docker-compose's `gateway-init`)."""
    from gateway.store.copy import Copied, copy_store

    option = "--to" if args.to is not None else "--from"
    other: str = args.to if args.to is not None else args.source
    if not other.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError(f"{option}: must start with sqlite:/// or postgresql://")
    if other.startswith("sqlite:///"):
        # A file named on the command line is where the operator stands, as `backup FOLDER` is; only
        # storage.database, in the configuration, is relative to the configuration's folder.
        other = "sqlite:///" + str(Path.cwd() / other.removeprefix("sqlite:///"))
    source_url, target_url = (config.storage.database, other) if option == "--to" else (other, config.storage.database)
    source_label, target_label = _database_label(config, source_url), _database_label(config, target_url)
    if source_label == target_label:
        raise CommandError(f"{option} names the configured database itself ({source_label})")
    if source_url.startswith("sqlite:///") and not Path(source_label).is_file():
        # Opening it would create an empty database where the operator expected theirs.
        where = "storage.database" if option == "--to" else "--from"
        raise CommandError(f"no database at {source_label}: check {where}")

    # A database where nothing may be written (read-only storage, a mounted snapshot) is read as an immutable file:
    # SQLite could not create the -shm file it otherwise reads a WAL database through, and no one writes there.
    immutable = source_url.startswith("sqlite:///") and not os.access(Path(source_label).parent, os.W_OK)

    async def work() -> Copied:
        source = await open_store(config, source_url, immutable=immutable)
        try:
            target = await open_store(config, target_url)
            try:
                return await copy_store(
                    source, target, progress=lambda table, rows: _note(f"{table}: {rows} rows copied")
                )
            finally:
                await target.close()
        finally:
            await source.close()

    copied = asyncio.run(work())
    if copied.version != copied.found:
        _note(
            f"{source_label}: an earlier release's database (schema version {copied.found}), copied as it is and"
            f" then migrated to {copied.version} in {target_label}; the source is left as it was"
        )
    _say(f"copied {sum(copied.rows.values())} rows from {source_label} to {target_label}")
    _say(f"  {'table':<24}{'rows':>10}{'next id':>10}")
    for table, rows in copied.rows.items():
        position = copied.id_positions.get(table)
        _say(f"  {table:<24}{rows:>10}" + (f"{position + 1:>10}" if position is not None else ""))
    if option == "--to":
        _note(
            "now set storage.database to the new database and keep the same data directory (encryption key, registry"
            " signing key, embedded repositories and packages): every token keeps working"
        )
    else:
        _note(
            "now start the gateway on storage.database with the data directory the copied database was used with"
            " (encryption key, registry signing key, embedded repositories and packages): every token keeps working"
        )
    return 0


def cmd_backup(config: Config, args: argparse.Namespace) -> int:
    """The installation into a new folder, while it serves (gateway/backup.py)."""
    from gateway import backup

    folder = Path(args.folder)
    link_dest = Path(args.link_dest) if args.link_dest else None
    manifest = asyncio.run(backup.take(config, folder, _note, link_dest=link_dest))
    bundles = f" ({manifest['repositories_linked']} linked)" if link_dest else ""
    linked = f" ({manifest['package_files_linked']} linked to {link_dest})" if link_dest else ""
    _say(
        f"backed up {_many(sum(manifest['rows'].values()), 'row')}, {_many(len(manifest['keys']), 'key file')},"
        f" {_many(len(manifest['repositories']), 'repository', 'repositories')}{bundles} and"
        f" {_many(manifest['package_files'], 'package file')}{linked} to {folder}"
    )
    return 0


def cmd_restore(config: Config, args: argparse.Namespace) -> int:
    """A backup folder into the configured installation, which must be new (gateway/backup.py)."""
    from gateway import backup

    folder = Path(args.folder)
    if args.check:
        problems = asyncio.run(backup.check(config, folder, _note))
        for problem in problems:
            _note(problem)
        if problems:
            raise CommandError(f"{folder}: {len(problems)} problem{'s' if len(problems) > 1 else ''} found")
        _say(f"{folder} is a whole backup: every file it records reads back as it was written")
        return 0
    copied = asyncio.run(backup.restore(config, folder, _note))
    _say(f"restored {sum(copied.rows.values())} rows from {folder}")
    _note("now start the gateway: every token of the backup works, and ci-variables gives the same secrets")
    return 0


# --- users -----------------------------------------------------------------------------------------------------


def _read_password_stdin() -> str:
    line = sys.stdin.readline()
    password = line.rstrip("\r\n")
    if not password:
        raise CommandError("--password-stdin: no password on standard input")
    return password


def cmd_users_create(config: Config, args: argparse.Namespace) -> int:
    password = _read_password_stdin() if args.password_stdin else None

    async def work(store: Store) -> Any:
        now = _now()
        user = await users.create_user(
            store,
            _hasher(config),
            username=args.username,
            name=args.name,
            email=args.email or "",
            password=password,
            is_admin=args.admin,
            now=now,
        )
        await _audit(store, now, audit.user_created(user))
        return user

    user = asyncio.run(_with_store(config, work))
    _say(f"created {'admin ' if user.is_admin else ''}user {user.username} (id {user.id})")
    return 0


def _parse_scopes(values: Sequence[str]) -> tuple[str, ...]:
    items = [s.strip() for v in values for s in v.split(",") if s.strip()]
    unknown = [s for s in items if s not in users.PAT_SCOPES]
    if unknown or not items:
        raise CommandError(
            f"--scopes: unknown scope {unknown[0]!r}" if unknown else "--scopes: at least one scope is required"
        )
    return tuple(s for s in users.PAT_SCOPES if s in set(items))


def cmd_users_token(config: Config, args: argparse.Namespace) -> int:
    scopes = _parse_scopes(args.scopes or ["api"])
    now = _now()
    try:
        expires_at = tokens.parse_expires_at(args.expires_at)
    except HTTPFailure:
        raise CommandError(f"--expires-at: not a date (YYYY-MM-DD) or ISO 8601 datetime: {args.expires_at!r}") from None
    if expires_at is not None and expires_at <= now:
        raise CommandError("--expires-at: must be in the future")

    async def work(store: Store) -> str:
        user = await store.get_user_by_username(args.username)
        if user is None:
            raise CommandError(f"no such user: {args.username}")
        created = await users.create_pat(
            store, user=user, name=args.name, scopes=scopes, expires_at=expires_at, now=now
        )
        await _audit(store, now, audit.pat_created(created.token, user))
        return created.secret

    _say(asyncio.run(_with_store(config, work)))
    return 0


def cmd_users_tokens(config: Config, args: argparse.Namespace) -> int:
    """The user's personal access tokens, one per line: id, state, name, scopes, expiry, last use (never a secret)."""
    now = _now()

    async def work(store: Store) -> list[str]:
        user = await store.get_user_by_username(args.username)
        if user is None:
            raise CommandError(f"no such user: {args.username}")
        lines = []
        for pat in await store.list_personal_access_tokens(user.id):
            state = "revoked" if pat.revoked else "active" if users.pat_is_active(pat, now) else "expired"
            expires = pat.expires_at.date().isoformat() if pat.expires_at else "never"
            used = pat.last_used_at.isoformat(timespec="seconds") if pat.last_used_at else "never"
            lines.append(f"{pat.id}\t{state}\t{pat.name}\t{','.join(pat.scopes)}\texpires {expires}\tlast used {used}")
        return lines

    for line in asyncio.run(_with_store(config, work)):
        _say(line)
    return 0


def cmd_users_revoke_token(config: Config, args: argparse.Namespace) -> int:
    """Revoke a personal access token by id (from `users tokens`): the way back when an admin's only token leaked."""

    async def work(store: Store) -> str:
        pat = await store.get_personal_access_token(args.token_id)
        if pat is None:
            raise CommandError(f"no personal access token with id {args.token_id}")
        await store.revoke_personal_access_token(pat.id)
        owner = await store.get_user(pat.user_id)
        await _audit(store, _now(), audit.pat_revoked(pat, owner))
        return f"revoked personal access token {pat.id} ({pat.name}) of {owner.username if owner else pat.user_id}"

    _say(asyncio.run(_with_store(config, work)))
    return 0


# --- ci-variables ----------------------------------------------------------------------------------------------


async def ci_variables(config: Config, store: Store, project_path: str, now: datetime) -> tuple[str, str]:
    """CI_DEPLOY_USER / CI_DEPLOY_PASSWORD of the project's active `gitlab-deploy-token`, else its parent group's.

    GitLab (app/models/ci/build.rb, gitlab-behaviour.md §8): the group token serves immediate child projects only.
    """
    project = await store.get_project_by_path(project_path.strip("/").removesuffix(".git"))
    if project is None:
        raise CommandError(f"project not found: {project_path}")
    token = await store.find_named_deploy_token(tokens.CI_TOKEN_NAME, project_id=project.id, active_at=now)
    if token is None and project.namespace.kind == "group":
        token = await store.find_named_deploy_token(tokens.CI_TOKEN_NAME, group_id=project.namespace.id, active_at=now)
    if token is None:
        raise CommandError(
            f"no active deploy token named {tokens.CI_TOKEN_NAME!r} in project {project.full_path}"
            + (f" or its group {project.namespace.full_path}" if project.namespace.kind == "group" else "")
        )
    if token.token_encrypted is None:
        raise CommandError(f"deploy token {token.id} has no recoverable secret")
    keyring = encryption_keys.load_keyring(Path(config.storage.encryption_key), strict=False)
    for problem in keyring.damaged:
        _note(f"warning: encryption key file left out: {problem}")
    secret = keyring.open(token.token_encrypted, purpose=encryption_keys.DEPLOY_TOKEN_PURPOSE)
    if secret is None:
        raise CommandError(
            f"cannot decrypt deploy token {token.id}: no key of storage.encryption_key (nor a staged or retiring one"
            " beside it) is the key it was sealed with"
        )
    owner = await store.find_deploy_token(tokens.digest(secret))
    if owner is None or owner.id != token.id:
        # A sealed secret moved from another token's row (a crafted restore or copy): never printed for this one.
        raise CommandError(f"deploy token {token.id}: its sealed secret is not its own (its digest differs)")
    return token.username, secret


def cmd_ci_variables(config: Config, args: argparse.Namespace) -> int:
    # Fail on a missing key before touching the database.
    secretbox.load(Path(config.storage.encryption_key))

    async def work(store: Store) -> tuple[str, str]:
        return await ci_variables(config, store, args.project_path, _now())

    username, password = asyncio.run(_with_store(config, work))
    _say(f"CI_DEPLOY_USER={username}")
    _say(f"CI_DEPLOY_PASSWORD={password}")
    return 0


# --- bans ------------------------------------------------------------------------------------------------------


def cmd_bans_list(config: Config, args: argparse.Namespace) -> int:
    """Addresses banned now or with recent failures (bruteforce.py), one line each, most recent first."""
    now = _now()

    async def work(store: Store) -> list[AuthFailures]:
        since = now - timedelta(seconds=config.bruteforce.find_time)
        return await store.list_auth_failures(now=now, updated_since=since, limit=args.limit)

    for row in asyncio.run(_with_store(config, work)):
        # Whole seconds, as `users tokens` prints its times.
        until = row.banned_until.isoformat(timespec="seconds") if row.banned_until else ""
        state = f"banned until {until}" if row.banned_until and row.banned_until > now else ""
        since = row.window_start.isoformat(timespec="seconds")
        _say(f"{row.address}\t{_many(row.failures, 'failure')} since {since}\t{state}".rstrip())
    return 0


def cmd_bans_lift(config: Config, args: argparse.Namespace) -> int:
    """Forget an address's failures and lift its ban; every process stops applying it at its next refresh (1 s)."""
    from ipaddress import ip_address

    from gateway import bruteforce

    try:
        key = bruteforce.ban_key(str(ip_address(args.address)))
    except ValueError:
        raise CommandError(f"not an IP address: {args.address!r}") from None

    async def work(store: Store) -> bool:
        return await store.clear_auth_failures(key, now=_now(), lift_ban=True)

    lifted = asyncio.run(_with_store(config, work))
    _say(f"{key}: {'lifted' if lifted else 'nothing on record'}")
    return 0


# --- registry signing key ---------------------------------------------------------------------------------------


def cmd_registry_key_show(config: Config, args: argparse.Namespace) -> int:
    """The certificates the registry is told to trust (registry.certificate), each with its key's role."""
    from gateway import key_rotation

    for cert in key_rotation.certificates(config.registry):
        _say(f"{cert.role:<9} {cert.algorithm}  {cert.kid}  valid until {cert.not_after.date().isoformat()}")

    async def work(store: Store) -> tuple[list[KeyHolder], list[KeyHolder]]:
        return await key_watch.recent(store), await key_watch.quiet(store)

    try:
        # Read only, and not migrated: `show` must not change a database older gateways still serve.
        holders, quiet = asyncio.run(_with_store(config, work, migrate=False))
    except StoreError as exc:
        _note(f"the running processes are not known: {exc}")
        return 0
    for holder in holders:
        _say(f"process   {key_watch.named(holder)}  signs with {holder.registry_kid or 'no key'}")
    _say_quiet(quiet)
    return 0


def _say_quiet(quiet: Sequence[KeyHolder]) -> None:
    for holder in quiet:
        _say(f"quiet     {key_watch.named(holder)}: killed, or cannot reach the database; not waited for")


def cmd_registry_key_rotate(config: Config, args: argparse.Namespace) -> int:
    from gateway import key_rotation

    key = key_rotation.stage(config.registry, args.algorithm or config.registry.algorithm, _now())
    _say(f"staged {key.algorithm} key {key.kid} in {key_rotation.staged_path(Path(config.registry.signing_key))}")
    _note(
        f"its certificate was added to {config.registry.certificate}; the active key signs on. Next: restart the"
        " registry (it reads its rootcertbundle only when it starts), then `gateway registry-key activate`"
    )
    return 0


def cmd_registry_key_activate(config: Config, args: argparse.Namespace) -> int:
    from gateway import key_rotation

    key = asyncio.run(key_rotation.activate(config.registry, check=not args.no_check, now=_now()))
    _say(f"activated {key.algorithm} key {key.kid} as {config.registry.signing_key}")
    if key.algorithm != config.registry.algorithm:
        _note(
            f'set registry.algorithm = "{key.algorithm}" in the configuration, then restart every gateway process,'
            " one replica after another (the registry trusts both keys meanwhile)"
        )
    else:
        _note(
            f"every gateway process signs with the new key within {int(key_watch.CHECK_INTERVAL)} s ({_RELOAD} at"
            " once; the registry trusts both keys meanwhile)"
        )
    _note(f"registry.token_ttl ({config.registry.token_ttl} s) after the last of them: `gateway registry-key retire`")
    return 0


def cmd_registry_key_retire(config: Config, args: argparse.Namespace) -> int:
    from gateway import key_rotation

    holders = asyncio.run(_with_store(config, key_watch.recent, migrate=False))
    retired = key_rotation.retire(config.registry, wait=not args.now, holders=holders)
    if not retired:
        _say("nothing to retire: every certificate is the active or the staged key's")
        return 0
    for cert in retired:
        _say(f"retired {cert.algorithm} key {cert.kid}")
    _note("next: restart the registry; from then on it refuses tokens the old key signed")
    return 0


# --- encryption key ---------------------------------------------------------------------------------------------

_RELOAD = "SIGHUP: `systemctl reload gateway`, `kill -HUP <pid>`"


def _day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).date().isoformat()


def cmd_encryption_key_show(config: Config, args: argparse.Namespace) -> int:
    """The keys beside storage.encryption_key with their roles, and which of them sealed the secrets kept sealed."""
    key_path = Path(config.storage.encryption_key)
    keyring = encryption_keys.load_keyring(key_path, strict=False)
    for problem in keyring.damaged:
        _say(f"damaged   {problem}: delete it (a staged key: then `rotate` again)")
    staged = encryption_keys.staged_path(key_path).exists() and not any(
        str(encryption_keys.staged_path(key_path)) in problem for problem in keyring.damaged
    )
    roles = ["active", *(("staged",) if staged else ()), *(("retiring",) if len(keyring.others) > staged else ())]
    for role, box in zip(roles, keyring.boxes, strict=True):
        if role == "active":
            _say(f"active    {box.key_id}  since {_day(encryption_keys.activated_at(key_path))}")
        elif role == "staged":
            _say(f"staged    {box.key_id}")
        elif box.key_id == keyring.active.key_id:
            _say(f"retiring  {box.key_id}  the active key itself: an activation was cut short, run `activate` again")
        else:
            after = _day(encryption_keys.retire_after(key_path))
            _say(f"retiring  {box.key_id}  retire after {after} (refresh tokens), or sooner with --now")

    async def work(store: Store) -> tuple[list[tuple[int, bytes]], list[KeyHolder], list[KeyHolder]]:
        return await store.list_sealed_deploy_tokens(), await key_watch.recent(store), await key_watch.quiet(store)

    sealed, holders, quiet = asyncio.run(_with_store(config, work))
    for holder in holders:
        seals, *opens = holder.encryption_keys
        _say(
            f"process   {key_watch.named(holder)}  seals with {seals}"
            + (f", opens with {' '.join(opens)}" if opens else "")
        )
    _say_quiet(quiet)
    found = [keyring.opener(value, purpose=encryption_keys.DEPLOY_TOKEN_PURPOSE) for _, value in sealed]
    # By position, not by id: after a cut activation the retiring file is the active key again.
    counts = ", ".join(
        f"{sum(1 for f in found if f is not None and f[0] is box)} by {box.key_id}"
        for i, box in enumerate(keyring.boxes)
        if all(other.key_id != box.key_id for other in keyring.boxes[:i])
    )
    unreadable = [token_id for (token_id, _), f in zip(sealed, found, strict=True) if f is None]
    _say(
        f"sealed secrets: {counts}"
        + (f", {len(unreadable)} by no key here (deploy tokens {unreadable})" if unreadable else "")
    )
    return 0


def cmd_encryption_key_rotate(config: Config, args: argparse.Namespace) -> int:
    key_path = Path(config.storage.encryption_key)
    box = encryption_keys.stage(key_path)
    _say(f"staged encryption key {box.key_id} in {encryption_keys.staged_path(key_path)}")
    _note(
        f"the active key seals on; every gateway process loads the new one within {int(key_watch.CHECK_INTERVAL)}"
        f" s ({_RELOAD} to be sure at once). Then, {int(key_watch.SETTLE)} s after this:"
        " `gateway encryption-key activate`"
    )
    return 0


def cmd_encryption_key_activate(config: Config, args: argparse.Namespace) -> int:
    key_path = Path(config.storage.encryption_key)

    async def work(store: Store) -> tuple[encryption_keys.Activated, encryption_keys.Resealed]:
        # The database answers before a file changes: the secrets are sealed again in the same run.
        holders = await key_watch.recent(store)  # the processes running, each of which must hold the new key
        activated = encryption_keys.activate(key_path, holders=holders)
        return activated, await encryption_keys.reseal(store, encryption_keys.load_keyring(key_path))

    activated, done = asyncio.run(_with_store(config, work))
    retiring = encryption_keys.retiring_path(key_path)
    if activated.switched:
        _say(f"activated encryption key {activated.new.key_id}; {activated.old.key_id} is retiring ({retiring})")
    else:
        _say(f"encryption key {activated.new.key_id} was activated already; {activated.old.key_id} is retiring")
    _say(f"sealed again with the new key: {_many(done.resealed, 'secret')}")
    if done.unreadable:
        _note(
            f"warning: no key of the keyring opens {_many(len(done.unreadable), 'secret')} (deploy tokens"
            f" {', '.join(map(str, done.unreadable))}): sealed with a key this installation no longer has; `retire`"
            " will refuse until those tokens are deleted or recreated"
        )
    _note(
        f"every gateway process seals with the new key within {int(key_watch.CHECK_INTERVAL)} s ({_RELOAD} to"
        " be sure at once). `gateway encryption-key retire` a refresh token's life later"
        f" ({_day(encryption_keys.retire_after(key_path))}), or sooner with --now after a leak"
    )
    return 0


def cmd_encryption_key_retire(config: Config, args: argparse.Namespace) -> int:
    key_path = Path(config.storage.encryption_key)

    async def work(store: Store) -> tuple[secretbox.SecretBox, encryption_keys.Resealed] | None:
        return await encryption_keys.retire(key_path, store, wait=not args.now)

    result = asyncio.run(_with_store(config, work))
    if result is None:
        _say("nothing to retire: no key is retiring")
        return 0
    retired, done = result
    _say(f"retired encryption key {retired.key_id}; sealed again with the active key: {_many(done.resealed, 'secret')}")
    _note(
        f"every gateway process refuses the refresh tokens the retired key MACed within"
        f" {int(key_watch.CHECK_INTERVAL)} s ({_RELOAD} at once); their docker clients `docker login` again"
    )
    return 0


# --- argument parsing ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="GitLab-style deploy tokens in front of git, container registry and packages."
    )
    parser.add_argument(
        "--config", metavar="FILE", help="TOML configuration file (default: $GATEWAY_CONFIG, else built-in defaults)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser(
        "init", help="create data dir, keys, database and (on a fresh database) the admin user root"
    )
    p.set_defaults(func=cmd_init)

    p = commands.add_parser("serve", help="run the HTTP server (after `gateway init`)")
    p.add_argument("--listen", metavar="HOST:PORT", help="overrides server.listen (port 0 picks a free port)")
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="overrides server.workers: N processes on one port, supervised by this one (default 1)",
    )
    p.set_defaults(func=cmd_serve)

    p = commands.add_parser("migrate", help="apply database migrations and print the schema version")
    p.set_defaults(func=cmd_migrate)

    p = commands.add_parser("store", help="the database as a whole")
    store_commands = p.add_subparsers(dest="store_command", metavar="COMMAND", required=True)
    c = store_commands.add_parser(
        "copy",
        help="copy every row of a database into a new, empty one (SQLite to PostgreSQL, or back)",
        description="Copy every row of the configured database into a new, empty one (--to), or of another database"
        " into the configured one (--from): ids, token digests and id"
        " sequences carry over, so every deploy token, personal access token and session keeps working. The source"
        " is read as one snapshot (stop the gateway first: later writes are not copied); the target is migrated,"
        " must hold no data, and is written in one transaction (a failure leaves it empty).",
    )
    direction = c.add_mutually_exclusive_group(required=True)
    direction.add_argument(
        "--to",
        metavar="DATABASE",
        help="copy storage.database into DATABASE: sqlite:///FILE or postgresql://USER[:PASSWORD]@HOST/DB (without"
        " a password: PGPASSWORD or ~/.pgpass)",
    )
    direction.add_argument(
        "--from",
        dest="source",
        metavar="DATABASE",
        help="copy DATABASE (same forms) into storage.database, e.g. an old SQLite file into docker-compose's"
        " PostgreSQL",
    )
    c.set_defaults(func=cmd_store_copy)

    p = commands.add_parser(
        "backup",
        help="back up the installation into a new folder, while it serves",
        description="Write the database (one snapshot, as an SQLite file), the key files, one `git bundle` per"
        " embedded repository and the embedded package files into FOLDER (new or empty), with a manifest.json"
        " written last. The gateway may serve meanwhile: what it writes after the snapshot may be missing.",
    )
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument(
        "--link-dest",
        metavar="EARLIER",
        help="an earlier backup's folder: package blobs it holds, and the bundles of repositories whose refs have"
        " not moved since, are hard-linked to it rather than written again (as rsync --link-dest; blobs are named"
        " by their SHA-256 and never change, a bundle is checked against the digest its manifest records), so a"
        " daily backup writes only what changed. Copied where no link can be made (another file system)",
    )
    p.set_defaults(func=cmd_backup)
    p = commands.add_parser(
        "restore",
        help="restore a backup folder into a new installation",
        description="Restore FOLDER (from `gateway backup`) into the installation the configuration names, which"
        " must be new: an empty database (do not run `gateway init` first), no repositories or package files, key"
        " files absent or the same. The database is restored first, all or nothing; then the keys, repositories"
        " and packages.",
    )
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument(
        "--check",
        action="store_true",
        help="restore nothing: read every file of the backup whole and check it against what the backup recorded"
        " (SQLite's integrity check and the rows counted, each bundle's and each package blob's SHA-256, each"
        " package file's blob); exit 1 listing what is wrong",
    )
    p.set_defaults(func=cmd_restore)

    p = commands.add_parser("users", help="manage users and their personal access tokens")
    user_commands = p.add_subparsers(dest="users_command", metavar="COMMAND", required=True)
    u = user_commands.add_parser("create", help="create a user")
    u.add_argument("username", metavar="NAME")
    u.add_argument("--admin", action="store_true", help="make the user an administrator")
    u.add_argument("--email", metavar="E")
    u.add_argument("--full-name", dest="name", metavar="TEXT", help="display name (default: the username)")
    u.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    u.set_defaults(func=cmd_users_create)
    u = user_commands.add_parser("token", help="create a personal access token and print only the token")
    u.add_argument("username", metavar="NAME")
    u.add_argument(
        "--scopes",
        action="append",
        metavar="S[,S...]",
        help=f"comma-separated, repeatable; from {', '.join(users.PAT_SCOPES)} (default: api)",
    )
    u.add_argument("--expires-at", metavar="DATE", help="YYYY-MM-DD (midnight UTC) or ISO 8601 datetime")
    u.add_argument("--name", default=CLI_TOKEN_NAME, metavar="N", help=f"token name (default: {CLI_TOKEN_NAME!r})")
    u.set_defaults(func=cmd_users_token)
    u = user_commands.add_parser("tokens", help="list a user's personal access tokens (ids, state, never secrets)")
    u.add_argument("username", metavar="NAME")
    u.set_defaults(func=cmd_users_tokens)
    u = user_commands.add_parser("revoke-token", help="revoke a personal access token by its id")
    u.add_argument("token_id", type=int, metavar="ID")
    u.set_defaults(func=cmd_users_revoke_token)

    p = commands.add_parser("bans", help="failed-authentication bans (brute-force protection)")
    ban_commands = p.add_subparsers(dest="bans_command", metavar="COMMAND", required=True)
    b = ban_commands.add_parser("list", help="addresses banned now or with recent failures")
    b.add_argument("--limit", type=int, default=1000, metavar="N")
    b.set_defaults(func=cmd_bans_list)
    b = ban_commands.add_parser("lift", help="lift the ban of an address and forget its failures")
    b.add_argument("address", metavar="ADDRESS", help="an IPv4 or IPv6 address (IPv6 is banned by its /64)")
    b.set_defaults(func=cmd_bans_lift)

    p = commands.add_parser("registry-key", help="rotate the key that signs registry tokens, with no downtime")
    key_commands = p.add_subparsers(dest="registry_key_command", metavar="COMMAND", required=True)
    k = key_commands.add_parser("show", help="the certificates of registry.certificate and their keys' roles")
    k.set_defaults(func=cmd_registry_key_show)
    k = key_commands.add_parser("rotate", help="1. stage a new key and add its certificate to registry.certificate")
    k.add_argument("--algorithm", choices=["RS256", "ES256"], help="the new key's (default: registry.algorithm)")
    k.set_defaults(func=cmd_registry_key_rotate)
    k = key_commands.add_parser("activate", help="2. sign with the staged key, once the registry trusts it")
    k.add_argument("--no-check", action="store_true", help="do not ask the registry whether it trusts the key")
    k.set_defaults(func=cmd_registry_key_activate)
    k = key_commands.add_parser("retire", help="3. drop the old key's certificate from registry.certificate")
    k.add_argument("--now", action="store_true", help="do not wait registry.token_ttl after the activation")
    k.set_defaults(func=cmd_registry_key_retire)

    p = commands.add_parser("encryption-key", help="rotate the key that seals CI secrets and MACs refresh tokens")
    key_commands = p.add_subparsers(dest="encryption_key_command", metavar="COMMAND", required=True)
    k = key_commands.add_parser("show", help="the keys and their roles, and which key sealed each secret")
    k.set_defaults(func=cmd_encryption_key_show)
    k = key_commands.add_parser("rotate", help="1. stage a new key beside the active one")
    k.set_defaults(func=cmd_encryption_key_rotate)
    k = key_commands.add_parser("activate", help="2. seal with the staged key; the active one only opens from now on")
    k.set_defaults(func=cmd_encryption_key_activate)
    k = key_commands.add_parser("retire", help="3. seal again what the old key sealed, then delete it")
    k.add_argument("--now", action="store_true", help="do not wait until its refresh tokens expired (after a leak)")
    k.set_defaults(func=cmd_encryption_key_retire)

    p = commands.add_parser(
        "ci-variables", help="print CI_DEPLOY_USER/CI_DEPLOY_PASSWORD from the project's gitlab-deploy-token"
    )
    p.add_argument("project_path", metavar="PROJECT_PATH", help="e.g. group/project")
    p.set_defaults(func=cmd_ci_variables)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_module.load(args.config)
        status: int = args.func(config, args)
        return status
    except ConfigError as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        # Files and directories the operator pointed us at (unwritable data dir, a file where a folder should be).
        where = f": {exc.filename}" if exc.filename else ""
        print(f"gateway: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
