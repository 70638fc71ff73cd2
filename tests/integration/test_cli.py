"""The `gateway` CLI as operators run it: a real subprocess per command, on a config file in a temporary folder."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway import config as config_module
from gateway import secretbox, tokens
from gateway.store import open_store
from gateway.store.base import Listing, Namespace, Project, Store
from gateway.store.migrations import bundled
from gateway.tokens import Holder
from tests.conftest import FAST_KDF
from tests.procs import wait_until

START_TIMEOUT = 20.0


@dataclass
class Gateway:
    """A temporary installation: a config file whose relative paths all land next to it."""

    folder: Path

    @property
    def config_file(self) -> Path:
        return self.folder / "gateway.toml"

    def run(
        self,
        *args: str,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
        config: bool = True,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "gateway", *(["--config", str(self.config_file)] if config else []), *args]
        environment = {k: v for k, v in os.environ.items() if k != "GATEWAY_CONFIG"} | (env or {})
        return subprocess.run(
            argv,
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            cwd=cwd or self.folder,
            env=environment,
            timeout=60,
        )

    def init(self) -> str:
        result = self.run("init")
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()[-1]

    def config(self) -> config_module.Config:
        return config_module.load(self.config_file)


def new_installation(folder: Path) -> Gateway:
    folder.mkdir(parents=True)
    kdf = "\n".join(f"{k} = {v}" for k, v in FAST_KDF.items())
    (folder / "gateway.toml").write_text(f'[security]\n{kdf}\n\n[storage]\ndata_dir = "data"\n')
    return Gateway(folder)


@pytest.fixture
def fresh(tmp_path: Path) -> Gateway:
    """A fresh, not yet initialized installation."""
    return new_installation(tmp_path / "install")


@pytest.fixture(scope="session")
def initialized_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    template = new_installation(tmp_path_factory.mktemp("template") / "install")
    template.init()
    return template.folder


@pytest.fixture
def gw(tmp_path: Path, initialized_template: Path) -> Gateway:
    """An installation after `gateway init` (a copy of one made once per session: init costs a key generation)."""
    shutil.copytree(initialized_template, tmp_path / "install")
    return Gateway(tmp_path / "install")


class Server:
    """`gateway serve` on a free port; the port is read from its "listening on" log line."""

    def __init__(self, gw: Gateway, *extra: str) -> None:
        argv = [sys.executable, "-m", "gateway", "--config", str(gw.config_file), "serve", *extra]
        self.proc = subprocess.Popen(argv, cwd=gw.folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = self._wait_listening()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def _next_entry(self, deadline: float) -> dict[str, Any] | None:
        try:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None
        entry: dict[str, Any] = json.loads(line)  # every log line is one JSON object
        self.log.append(entry)
        return entry

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            entry = self._next_entry(deadline)
            if entry and str(entry.get("message", "")).startswith("listening on "):
                return str(entry["message"]).removeprefix("listening on ")
            if self.proc.poll() is not None and self.lines.empty():
                break
        self.stop()
        raise AssertionError(f"gateway did not start: {self.log}")

    def wait_log(self, prefix: str) -> dict[str, Any]:
        """The first log entry whose message starts with `prefix` (read as it comes)."""
        deadline = time.monotonic() + START_TIMEOUT
        for entry in self.log:
            if str(entry.get("message", "")).startswith(prefix):
                return entry
        while time.monotonic() < deadline:
            entry = self._next_entry(deadline)
            if entry and str(entry.get("message", "")).startswith(prefix):
                return entry
        raise AssertionError(f"no log line starting {prefix!r}: {self.log}")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, headers=headers or {})  # noqa: S310 - loopback http URL
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - a loopback test URL
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._reader.join(timeout=5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        deadline = time.monotonic() + 1
        while not self.lines.empty():
            self._next_entry(deadline)
        return code


@pytest.fixture
def serve() -> Iterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.stop()


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith("gateway.db")
    }


# --- init ------------------------------------------------------------------------------------------------------


def test_init_creates_everything_and_prints_the_root_token_last(fresh: Gateway, serve: list[Server]) -> None:
    result = fresh.run("init")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    token = lines[-1]
    assert token.startswith("glpat-") and token == token.strip() and " " not in token
    assert all("glpat-" not in line for line in lines[:-1])
    assert "glpat-" not in result.stderr

    config = fresh.config()
    data = fresh.folder / "data"
    assert data.is_dir()
    for path in (config.storage.encryption_key, config.registry.signing_key, config.registry.certificate):
        assert Path(path).parent == data and Path(path).is_file()
    assert (Path(config.storage.encryption_key).stat().st_mode & 0o777) == 0o600
    assert (Path(config.registry.signing_key).stat().st_mode & 0o777) == 0o600
    assert (data / "gateway.db").is_file()

    server = Server(fresh, "--listen", "127.0.0.1:0")
    serve.append(server)
    status, body = server.get("/api/v4/user", {"PRIVATE-TOKEN": token})
    assert status == 200, body
    me = json.loads(body)
    assert me["username"] == "root" and me["is_admin"] is True
    status, _ = server.get("/api/v4/user", {"PRIVATE-TOKEN": token[:-1] + ("a" if token[-1] != "a" else "b")})
    assert status == 401


def test_serve_freezes_its_startup_heap(gw: Gateway, serve: list[Server]) -> None:
    """Once listening, the startup heap is out of full garbage collections (server.settle_heap), which paused the
    event loop 16-42 ms under load before."""
    server = Server(gw, "--listen", "127.0.0.1:0")
    serve.append(server)
    frozen = int(str(server.wait_log("startup heap settled: ")["message"]).split()[3])
    assert frozen > 10_000
    assert server.get("/-/health")[0] == 200


def test_second_init_creates_nothing_and_prints_no_token(gw: Gateway) -> None:
    before = files_of(gw.folder)
    again = gw.run("init")
    assert again.returncode == 0, again.stderr
    assert "glpat-" not in again.stdout + again.stderr
    assert "created" not in again.stdout
    assert files_of(gw.folder) == before


def test_init_with_ec_keys(fresh: Gateway) -> None:
    fresh.config_file.write_text(fresh.config_file.read_text() + '\n[registry]\nalgorithm = "ES256"\n')
    result = fresh.run("init")
    assert result.returncode == 0, result.stderr
    assert "(ES256, kid " in result.stdout


def test_migrate_prints_the_schema_version(fresh: Gateway) -> None:
    first = fresh.run("migrate")
    assert first.returncode == 0, first.stderr
    version = int(first.stdout.split()[-1])
    assert version >= 1
    assert fresh.run("migrate").stdout == first.stdout


# --- bans ------------------------------------------------------------------------------------------------------


async def test_bans_list_and_lift(gw: Gateway) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    store: Store = await open_store(gw.config())
    try:
        await store.migrate()
        await store.ban_address("192.0.2.9", until=now + timedelta(hours=1), now=now)
        await store.ban_address("2001:db8:1:2::/64", until=now + timedelta(hours=1), now=now)
    finally:
        await store.close()
    listed = gw.run("bans", "list")
    assert listed.returncode == 0, listed.stderr
    assert sorted(line.split("\t")[0] for line in listed.stdout.splitlines()) == ["192.0.2.9", "2001:db8:1:2::/64"]
    assert all("banned until" in line for line in listed.stdout.splitlines())
    # An IPv6 address names its /64, as bruteforce.ban_key counts it.
    lifted = gw.run("bans", "lift", "2001:db8:1:2::abcd")
    assert (lifted.returncode, lifted.stdout.strip()) == (0, "2001:db8:1:2::/64: lifted"), lifted.stderr
    assert [line.split("\t")[0] for line in gw.run("bans", "list").stdout.splitlines()] == ["192.0.2.9"]
    assert gw.run("bans", "lift", "2001:db8:1:2::abcd").stdout.strip() == "2001:db8:1:2::/64: nothing on record"
    bad = gw.run("bans", "lift", "not-an-address")
    assert bad.returncode != 0 and "not an IP address" in bad.stderr and "Traceback" not in bad.stderr


# --- users -----------------------------------------------------------------------------------------------------


def test_users_create_and_token(gw: Gateway, serve: list[Server]) -> None:
    created = gw.run(
        "users", "create", "alice", "--email", "alice@example.com", "--password-stdin", stdin="s3cret-pw\n"
    )
    assert created.returncode == 0, created.stderr
    assert "alice" in created.stdout and "s3cret-pw" not in created.stdout + created.stderr
    admin = gw.run("users", "create", "boss", "--admin")
    assert admin.returncode == 0, admin.stderr

    issued = gw.run("users", "token", "alice", "--scopes", "read_api,read_repository", "--expires-at", "2999-01-01")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert issued.stdout == token + "\n" and token.startswith("glpat-")

    server = Server(gw, "--listen", "127.0.0.1:0")
    serve.append(server)
    status, body = server.get("/api/v4/user", {"PRIVATE-TOKEN": token})
    assert status == 200, body
    assert json.loads(body)["username"] == "alice"
    assert json.loads(body)["email"] == "alice@example.com"

    # The operator's way back from a leaked token: list (never a secret), revoke by id, refused at once.
    listed = gw.run("users", "tokens", "alice")
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    token_id, state, name, scopes, *_ = line.split("\t")
    assert (state, scopes) == ("active", "read_api,read_repository") and token not in listed.stdout
    revoked = gw.run("users", "revoke-token", token_id)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout == f"revoked personal access token {token_id} ({name}) of alice\n"
    assert gw.run("users", "tokens", "alice").stdout.split("\t")[1] == "revoked"
    assert wait_until(lambda: server.get("/api/v4/user", {"PRIVATE-TOKEN": token})[0] == 401, timeout=5)

    # Every change made at the shell is in the audit trail, as the API's would be, its author the operator.
    boss_token = gw.run("users", "token", "boss", "--scopes", "api").stdout.strip()
    status, body = server.get("/api/v4/audit_events?per_page=100", {"PRIVATE-TOKEN": boss_token})
    assert status == 200, body
    assert token.encode() not in body and boss_token.encode() not in body
    kinds = {"user_created", "personal_access_token_created", "personal_access_token_revoked"}
    changes = [e for e in json.loads(body) if e["event_name"] in kinds]  # not the server's access decisions
    assert sorted((e["event_name"], e["details"]["target_details"]) for e in changes) == sorted(
        [
            ("user_created", "root"),  # gateway init, and the administrator's token it printed
            ("personal_access_token_created", "gateway init"),
            ("user_created", "alice"),
            ("user_created", "boss"),
            ("personal_access_token_created", name),  # alice's
            ("personal_access_token_revoked", name),
            ("personal_access_token_created", name),  # boss's, just now
        ]
    )
    for event in changes:
        assert event["author_id"] == -3
        assert event["details"]["author_name"].startswith("gateway CLI (")
        assert event["details"]["author_class"] == "Operator"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["users", "create", "root"], None, "Username has already been taken"),
        (["users", "create", "bad name"], None, "Username"),
        (["users", "create", "carol", "--email", "not-an-email"], None, "Email is invalid"),
        (["users", "create", "carol", "--password-stdin"], "", "no password on standard input"),
        (["users", "create", "carol", "--password-stdin"], "short\n", "Password is too short"),
        (["users", "token", "nobody"], None, "no such user: nobody"),
        (["users", "token", "root", "--scopes", "api,sudo"], None, "unknown scope 'sudo'"),
        (["users", "token", "root", "--scopes", ","], None, "at least one scope"),
        (["users", "token", "root", "--expires-at", "2021-02-30"], None, "--expires-at: not a date"),
        (["users", "token", "root", "--expires-at", "2001-01-01"], None, "--expires-at: must be in the future"),
        (["users", "tokens", "nobody"], None, "no such user: nobody"),
        (["users", "revoke-token", "424242"], None, "no personal access token with id 424242"),
    ],
)
def test_users_mistakes(gw: Gateway, args: list[str], stdin: str | None, message: str) -> None:
    result = gw.run(*args, stdin=stdin)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("gateway: error: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# --- ci-variables ----------------------------------------------------------------------------------------------

NOW = datetime.now(UTC)


async def seed(gw: Gateway, layout: dict[str, list[dict[str, Any]]]) -> None:
    """Create the group top/sub with projects top/app and top/sub/lib and deploy tokens as listed per holder path."""
    config = gw.config()
    box = secretbox.load(Path(config.storage.encryption_key))
    store: Store = await open_store(config)
    try:
        top = await store.create_group(
            name="Top", path="top", parent_id=None, visibility="private", description="", now=NOW
        )
        sub = await store.create_group(
            name="Sub", path="sub", parent_id=top.id, visibility="private", description="", now=NOW
        )
        holders: dict[str, Namespace | Project] = {"top": top, "top/sub": sub}
        for namespace, path in ((top, "app"), (sub, "lib")):
            holders[f"{namespace.full_path}/{path}"] = await store.create_project(
                namespace_id=namespace.id, name=path, path=path, visibility="private", description="",
                creator_id=None, now=NOW,
            )  # fmt: skip
        for holder_path, specs in layout.items():
            holder = holders[holder_path]
            for spec in specs:
                created = await tokens.create(
                    store,
                    box,
                    holder=Holder(project_id=holder.id) if isinstance(holder, Project) else Holder(group_id=holder.id),
                    name=spec.get("name", tokens.CI_TOKEN_NAME),
                    username=spec.get("username"),
                    scopes=["read_repository"],
                    expires_at=spec.get("expires_at"),
                    creator_id=None,
                    now=NOW,
                )
                if spec.get("revoked"):
                    await store.revoke_deploy_token(created.token.id)
                spec["result"] = created
    finally:
        await store.close()


CI = tokens.CI_TOKEN_NAME
PAST = NOW - timedelta(days=1)
FUTURE = NOW + timedelta(days=30)


@pytest.mark.parametrize(
    ("layout", "project", "winner"),
    [
        ({"top/app": [{"username": "ci-user"}]}, "top/app", ("top/app", 0)),
        ({"top/app": [{}]}, "top/app.git", ("top/app", 0)),  # default username gitlab+deploy-token-{id}
        ({"top": [{"username": "group-ci"}]}, "top/app", ("top", 0)),
        ({"top/sub": [{}]}, "top/sub/lib", ("top/sub", 0)),
        ({"top": [{"username": "g"}], "top/app": [{"username": "p"}]}, "top/app", ("top/app", 0)),
        ({"top/app": [{"revoked": True}], "top": [{"username": "g"}]}, "top/app", ("top", 0)),
        ({"top/app": [{"expires_at": FUTURE}]}, "top/app", ("top/app", 0)),
        ({"top/app": [{"expires_at": PAST}, {"username": "fresh"}]}, "top/app", ("top/app", 1)),
    ],
)
async def test_ci_variables(
    gw: Gateway, layout: dict[str, list[dict[str, Any]]], project: str, winner: tuple[str, int]
) -> None:
    await seed(gw, layout)
    result = gw.run("ci-variables", project)
    assert result.returncode == 0, result.stderr
    expected: tokens.Created = layout[winner[0]][winner[1]]["result"]
    assert result.stdout.splitlines() == [
        f"CI_DEPLOY_USER={expected.token.username}",
        f"CI_DEPLOY_PASSWORD={expected.secret}",
    ]


@pytest.mark.parametrize(
    ("layout", "project", "message"),
    [
        ({}, "top/app", "no active deploy token named 'gitlab-deploy-token' in project top/app or its group top"),
        ({"top/app": [{"name": "other"}]}, "top/app", "no active deploy token"),
        ({"top/app": [{"revoked": True}]}, "top/app", "no active deploy token"),
        ({"top/app": [{"expires_at": PAST}]}, "top/app", "no active deploy token"),
        # GitLab uses a group's token for its immediate child projects only (gitlab-behaviour.md §8).
        ({"top": [{}]}, "top/sub/lib", "no active deploy token"),
        ({"top/app": [{}]}, "top/nothing", "project not found: top/nothing"),
    ],
)
async def test_ci_variables_without_a_token(
    gw: Gateway, layout: dict[str, list[dict[str, Any]]], project: str, message: str
) -> None:
    await seed(gw, layout)
    result = gw.run("ci-variables", project)
    assert result.returncode == 1
    assert result.stdout == ""
    assert message in result.stderr
    assert "gldt-" not in result.stderr and "Traceback" not in result.stderr


async def test_ci_variables_with_a_different_encryption_key(gw: Gateway) -> None:
    await seed(gw, {"top/app": [{}]})
    key = Path(gw.config().storage.encryption_key)
    key.unlink()
    secretbox.ensure_key_file(key)
    result = gw.run("ci-variables", "top/app")
    assert result.returncode == 1
    assert (
        "no key of storage.encryption_key (nor a staged or retiring one beside it) is the key it was sealed with"
        in (result.stderr)
    )


# --- configuration mistakes and serve --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config_text", "args", "env", "code", "message"),
    [
        ('[server]\nlisen = "127.0.0.1:1"\n', ["init"], None, 2, "unknown configuration key: server.lisen"),
        ("[server\n", ["migrate"], None, 2, "invalid TOML"),
        ("[registry]\ntoken_ttl = 'long'\n", ["init"], None, 2, "registry.token_ttl: must be int, got str"),
        (None, ["--config", "missing.toml", "init"], None, 2, "configuration file not found: missing.toml"),
        ('[server]\nlisen = "x"\n', ["init"], {"GATEWAY_CONFIG": "gateway.toml"}, 2, "server.lisen"),
        ("", ["serve"], None, 2, "run `gateway init` first"),
        ("", ["ci-variables", "top/app"], None, 2, "run `gateway init`"),
        ("", ["serve", "--listen", "nowhere"], None, 2, "--listen: expected HOST:PORT"),
        ("", ["frobnicate"], None, 2, "invalid choice"),
        ("", [], None, 2, "required: COMMAND"),
    ],
)
def test_configuration_mistakes_are_clear_errors(
    fresh: Gateway,
    config_text: str | None,
    args: list[str],
    env: dict[str, str] | None,
    code: int,
    message: str,
) -> None:
    if config_text is not None:
        fresh.config_file.write_text(config_text)
    result = fresh.run(*args, env=env, config=config_text is not None and env is None)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(("gateway: error: ", "usage: gateway"))


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--to", "mysql://u:Secret-pw@db/gateway"], 2, "--to: must start with sqlite:/// or postgresql://"),
        (["--from", "mysql://u:Secret-pw@db/gateway"], 2, "--from: must start with sqlite:/// or postgresql://"),
        (["--to", "sqlite:///data/../data/gateway.db"], 1, "--to names the configured database itself"),
        (["--from", "sqlite:///data/../data/gateway.db"], 1, "--from names the configured database itself"),
        (["--to", "postgresql://u:Secret-pw@127.0.0.1:1/gateway"], 1, "cannot connect to PostgreSQL at 127.0.0.1:1/"),
        (["--from", "postgresql://u:Secret-pw@127.0.0.1:1/gw"], 1, "cannot connect to PostgreSQL at 127.0.0.1:1/gw"),
        (["--from", "sqlite:///old.db"], 1, "old.db: check --from"),
        (["--to", "sqlite:///a.db", "--from", "sqlite:///b.db"], 2, "argument --from: not allowed with argument --to"),
        ([], 2, "one of the arguments --to --from is required"),
    ],
)
def test_store_copy_mistakes_are_clear_errors(gw: Gateway, args: list[str], code: int, message: str) -> None:
    database = gw.folder / "data" / "gateway.db"
    before = database.read_bytes()
    result = gw.run("store", "copy", *args)
    assert result.returncode == code
    assert message in result.stderr
    assert "Secret-pw" not in result.stderr and "Traceback" not in result.stderr
    assert database.read_bytes() == before
    assert {path.name for path in gw.folder.glob("*.db")} == set()  # no database made on the way


def test_store_copy_without_a_source_database_creates_nothing(fresh: Gateway) -> None:
    result = fresh.run("store", "copy", "--to", "sqlite:///elsewhere.db")
    assert result.returncode == 1
    assert f"no database at {fresh.folder.resolve() / 'data' / 'gateway.db'}: check storage.database" in result.stderr
    assert not (fresh.folder / "data").exists() and not (fresh.folder / "elsewhere.db").exists()


def test_a_database_file_on_the_command_line_is_where_the_operator_stands(gw: Gateway, tmp_path: Path) -> None:
    """As `backup FOLDER` is: run from elsewhere, `--to sqlite:///copies/x.db` lands in the current directory, not
    in the configuration's folder (found by a README walkthrough: the two commands wrote to two folders)."""
    elsewhere = tmp_path / "operator"
    elsewhere.mkdir()
    result = gw.run("store", "copy", "--to", "sqlite:///copies/x.db", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "copies" / "x.db").is_file()
    assert not (gw.folder / "copies").exists()


def test_store_copy_from_another_database_fills_the_configured_one(gw: Gateway, tmp_path: Path) -> None:
    """`--from`: the configuration names the new database (as in docker-compose's containers), the old one is named
    on the command line; the users and their tokens arrive."""
    fresh = new_installation(tmp_path / "new")
    old = gw.folder.resolve() / "data" / "gateway.db"
    made = gw.run("users", "token", "root", "--name", "moved")
    assert made.returncode == 0, made.stderr
    copied = fresh.run("store", "copy", "--from", f"sqlite:///{old}")
    assert copied.returncode == 0, copied.stderr
    assert copied.stdout.startswith("copied ") and f"from {old} to {fresh.folder.resolve()}" in copied.stdout
    assert re.search(r"^  users +1 ", copied.stdout, re.M), copied.stdout
    listed = fresh.run("users", "tokens", "root")
    assert listed.returncode == 0 and "moved" in listed.stdout, listed.stderr


def _manifest(change: dict[str, Any]) -> Callable[[Path, Gateway, Gateway], None]:
    def edit(backup: Path, gw: Gateway, fresh: Gateway) -> None:
        manifest = json.loads((backup / "manifest.json").read_text())
        (backup / "manifest.json").write_text(json.dumps({**manifest, **change}))

    return edit


def _other_key(backup: Path, gw: Gateway, fresh: Gateway) -> None:
    (fresh.folder / "data").mkdir()
    (fresh.folder / "data" / "secret.key").write_bytes(os.urandom(32))


def _repository_there(backup: Path, gw: Gateway, fresh: Gateway) -> None:
    _manifest({"repositories": [{"path": "g/p", "bundle": None, "head": "refs/heads/main"}]})(backup, gw, fresh)
    (fresh.folder / "data" / "repositories" / "g" / "p.git").mkdir(parents=True)
    (fresh.folder / "data" / "repositories" / "g" / "p.git" / "HEAD").write_text("ref: refs/heads/main\n")


def _damaged_bundle(backup: Path, gw: Gateway, fresh: Gateway) -> None:
    """A bundle whose bytes are not the ones the manifest recorded (bit rot, a truncated copy)."""
    (backup / "repositories").mkdir()
    (backup / "repositories" / "p.bundle").write_bytes(b"# v2 git bundle\n")
    entry = {"path": "g/p", "bundle": "repositories/p.bundle", "head": "refs/heads/main", "sha256": "0" * 64}
    _manifest({"repositories": [entry]})(backup, gw, fresh)


@pytest.mark.parametrize(
    ("setup", "into", "message"),
    [
        (lambda b, g, f: (b / "manifest.json").unlink(), "fresh", "no manifest.json in"),
        (_damaged_bundle, "fresh", "p.bundle is damaged: its SHA-256 is not the one manifest.json records"),
        (_manifest({"version": 99}), "fresh", "backup format version 99: this gateway reads version 1"),
        (_manifest({"format": "tarball"}), "fresh", "is not a gateway backup's manifest"),
        (_manifest({"database": "../install/gateway.toml"}), "fresh", "which is not a file in the backup"),
        (
            _manifest({"repositories": [{"path": "g/p", "bundle": None, "head": "--upload-pack=touch x"}]}),
            "fresh",
            "HEAD must name a branch",
        ),
        (
            _manifest({"repositories": [{"path": "../p", "bundle": None, "head": "refs/heads/main"}]}),
            "fresh",
            "not a project path",
        ),
        (_other_key, "fresh", "secret.key exists and differs from the backup's"),
        (_repository_there, "fresh", "p.git exists: restore into a new installation"),
        (lambda b, g, f: None, "gw", "the target database is not empty"),
    ],
)
def test_restore_mistakes_change_nothing(
    gw: Gateway, tmp_path: Path, setup: Callable[[Path, Gateway, Gateway], None], into: str, message: str
) -> None:
    backup = tmp_path / "backup"
    taken = gw.run("backup", str(backup))
    assert taken.returncode == 0, taken.stderr
    fresh = new_installation(tmp_path / "fresh")
    setup(backup, gw, fresh)
    target = {"gw": gw, "fresh": fresh}[into]
    before = files_of(target.folder)
    result = target.run("restore", str(backup))
    assert result.returncode == 1, result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert files_of(target.folder) == before
    if into == "fresh":
        assert not (fresh.folder / "data" / "gateway.db").exists()


@pytest.mark.parametrize(
    ("command", "private"),
    [
        (["init"], ["install/data", "install/data/gateway.db"]),
        (["backup", "{tmp}/backup"], ["backup", "backup/database.db", "backup/keys"]),
        (["restore", "{tmp}/earlier"], ["target/data", "target/data/gateway.db"]),
        (["store", "copy", "--to", "sqlite:///{tmp}/copies/copy.db"], ["copies", "copies/copy.db"]),
    ],
    ids=["init", "backup", "restore", "store-copy"],
)
def test_what_holds_the_database_is_its_owners_alone(
    fresh: Gateway, tmp_path: Path, command: list[str], private: list[str]
) -> None:
    """Token digests, password hashes, sessions and the encrypted CI secret: every folder a command creates for a
    database is 0700 and every database file 0600, whatever the umask (the usual 022 would let every user of the
    machine read them)."""
    runner = fresh
    if command != ["init"]:
        fresh.init()
    if command[0] == "restore":
        assert fresh.run("backup", str(tmp_path / "earlier")).returncode == 0
        runner = new_installation(tmp_path / "target")
    result = runner.run(*[part.format(tmp=tmp_path) for part in command])
    assert result.returncode == 0, result.stderr
    for name in private:
        path = tmp_path / name
        assert path.stat().st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), (name, oct(path.stat().st_mode))


def test_backup_refuses_a_folder_that_holds_something(gw: Gateway, tmp_path: Path) -> None:
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "notes.txt").write_text("mine")
    result = gw.run("backup", str(tmp_path / "backup"))
    assert (result.returncode, result.stderr.strip()) == (
        1,
        f"gateway: error: {tmp_path / 'backup'} is not empty: back up into a new folder",
    )
    assert [p.name for p in (tmp_path / "backup").iterdir()] == ["notes.txt"]


def _put_package_file(install: Gateway, name: str, content: bytes) -> None:
    """A package file as the embedded store lays it out (package_store.py): its blob, named by the SHA-256 of its
    bytes, and a pointer to it."""
    digest = hashlib.sha256(content).hexdigest()
    packages = install.folder / "data" / "packages"
    (packages / "blobs" / digest[:2]).mkdir(parents=True, exist_ok=True)
    (packages / "blobs" / digest[:2] / digest).write_bytes(content)
    pointer = packages / "generic" / "1" / "tool" / "1.0" / f".f.{name}"
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text(json.dumps({"sha256": digest, "size": len(content)}))


def _blob(folder: Path, content: bytes) -> Path:
    digest = hashlib.sha256(content).hexdigest()
    return folder / "packages" / "blobs" / digest[:2] / digest


def test_a_backup_links_the_blobs_an_earlier_one_holds(gw: Gateway, tmp_path: Path) -> None:
    """--link-dest: blobs the earlier backup holds (same name, same size) are hard links to its files; new blobs,
    changed ones and the pointers are copies; the linked backup restores like any other."""
    kept, changed, new = b"kept" * 1000, b"changed" * 1000, b"new" * 1000
    _put_package_file(gw, "kept.bin", kept)
    _put_package_file(gw, "changed.bin", changed)
    monday = tmp_path / "monday"
    assert gw.run("backup", str(monday)).returncode == 0
    _blob(monday, changed).write_bytes(b"damaged")  # not the same size: never linked to
    _put_package_file(gw, "new.bin", new)
    tuesday = tmp_path / "tuesday"
    taken = gw.run("backup", str(tuesday), "--link-dest", str(monday))
    assert taken.returncode == 0, taken.stderr
    assert f"and 6 package files (1 linked to {monday}) to {tuesday}" in taken.stdout, taken.stdout
    assert json.loads((tuesday / "manifest.json").read_text())["package_files_linked"] == 1
    assert _blob(tuesday, kept).stat().st_ino == _blob(monday, kept).stat().st_ino
    for content in (changed, new):
        assert _blob(tuesday, content).stat().st_nlink == 1 and _blob(tuesday, content).read_bytes() == content
    pointers = [p for p in (tuesday / "packages" / "generic").rglob(".f.*")]
    assert len(pointers) == 3 and {p.stat().st_nlink for p in pointers} == {1}
    fresh = new_installation(tmp_path / "fresh")
    restored = fresh.run("restore", str(tuesday))
    assert restored.returncode == 0, restored.stderr
    for content in (kept, changed, new):
        assert _blob(fresh.folder / "data", content).read_bytes() == content


def _backup_to_check(gw: Gateway, tmp_path: Path) -> Path:
    """A backup of an installation holding one package file."""
    _put_package_file(gw, "tool.bin", b"tool" * 1000)
    backup = tmp_path / "backup"
    taken = gw.run("backup", str(backup))
    assert taken.returncode == 0, taken.stderr
    return backup


def test_restore_check_reads_a_whole_backup_and_writes_nothing(gw: Gateway, tmp_path: Path) -> None:
    backup = _backup_to_check(gw, tmp_path)
    fresh = new_installation(tmp_path / "fresh")
    before = files_of(tmp_path)
    checked = fresh.run("restore", str(backup), "--check")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == f"{backup} is a whole backup: every file it records reads back as it was written\n"
    for line in ("database: ", " rows, schema version ", "repositories: 0 bundles", "1 blobs, 1 pointers"):
        assert line in checked.stderr, checked.stderr
    assert files_of(tmp_path) == before  # neither the backup nor the installation: no database made


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """`folder` seen through a read-only bind mount, as a backup on read-only storage (a snapshot, a mounted
    archive) is; skipped where mounting is not allowed (it takes root)."""
    view = folder.parent / f"{folder.name}-read-only"
    view.mkdir()
    if subprocess.run(["mount", "--bind", str(folder), str(view)], capture_output=True).returncode != 0:
        pytest.skip("a read-only bind mount needs root")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], capture_output=True).returncode != 0:
            pytest.skip("this machine does not allow a read-only remount")
        with pytest.raises(OSError, match="Read-only file system"):
            (view / "probe").touch()
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)


def test_a_backup_on_read_only_storage_is_checked_and_restored(gw: Gateway, tmp_path: Path) -> None:
    """The backup's database is read as an immutable file: SQLite writes no -shm beside it, and needs none. So does
    `store copy --from` a database in a folder it cannot write."""
    backup = _backup_to_check(gw, tmp_path)
    fresh = new_installation(tmp_path / "fresh")
    copied = new_installation(tmp_path / "copied")
    with read_only(backup) as view:
        checked = fresh.run("restore", str(view), "--check")
        assert checked.returncode == 0, checked.stderr
        restored = fresh.run("restore", str(view))
        assert restored.returncode == 0, restored.stderr
        # store copy --from the same database where it lies (it failed: SQLite could not create its -shm there)
        moved = copied.run("store", "copy", "--from", f"sqlite:///{view / 'database.db'}")
        assert moved.returncode == 0, moved.stderr
    for installation in (fresh, copied):
        listed = installation.run("users", "tokens", "root")
        assert listed.returncode == 0 and "\tactive\t" in listed.stdout, listed.stderr


def _rewrite(path: str, change: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def edit(backup: Path) -> None:
        file = next(backup.glob(path))
        file.write_bytes(change(file.read_bytes()))

    return edit


def _edit_manifest(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def edit(backup: Path) -> None:
        manifest = json.loads((backup / "manifest.json").read_text())
        change(manifest)
        (backup / "manifest.json").write_text(json.dumps(manifest))

    return edit


def _bundle_of(content: bytes, *, digest: bool = False, head: str = "refs/heads/main") -> Callable[[Path], None]:
    def edit(backup: Path) -> None:
        (backup / "repositories").mkdir()
        (backup / "repositories" / "p.bundle").write_bytes(content)
        entry = {"path": "g/p", "bundle": "repositories/p.bundle", "head": head}  # as session 16 wrote
        if digest:  # the digest of whatever it holds: a backup made up whole
            entry["sha256"] = hashlib.sha256(content).hexdigest()
        _edit_manifest(lambda m: m.update(repositories=[entry]))(backup)

    return edit


def _truncated_bundle_without_digest(backup: Path) -> None:
    """A real bundle cut short, in a backup of a release that recorded no digest: restore's fetch would fail."""
    source = backup.parent / "bundled-source"
    subprocess.run(["git", "init", "-q", str(source)], check=True)
    (source / "f").write_bytes(os.urandom(20000))
    git = ["git", "-C", str(source), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    subprocess.run([*git, "bundle", "create", "-q", str(source / "b.bundle"), "--all"], check=True)
    _bundle_of((source / "b.bundle").read_bytes()[:-500])(backup)


def _symlink_in_packages(backup: Path) -> None:
    (backup / "packages" / "generic2").symlink_to("/etc")


def _newer_schema(backup: Path) -> None:
    with sqlite3.connect(backup / "database.db") as db:
        db.execute("INSERT INTO schema_version VALUES (99, '0099_future.sql', '2027-01-01')")
    db.close()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_rewrite("packages/blobs/*/*", lambda b: b[:-1] + b"x"), "is damaged: its SHA-256 is not its name"),
        (lambda b: next(b.glob("packages/blobs/*/*")).unlink(), "names a blob of 4000 bytes that the backup does not"),
        (_rewrite("packages/generic/**/.f.*", lambda b: b"{"), "cannot be read: "),
        (lambda b: _damaged_bundle(b, None, None), "p.bundle is damaged: its SHA-256 is not the one manifest.json"),  # type: ignore[arg-type]
        (_truncated_bundle_without_digest, "repository 'g/p': git fetch failed"),
        # Found by a review: `git fetch FILE` read a one-line gitdir file as the repository it points at.
        (_bundle_of(b"gitdir: /etc/.git\n", digest=True), "p.bundle is not a git bundle"),
        (_bundle_of(b"not a bundle"), "p.bundle is not a git bundle"),
        # A thin bundle would fail its fetch into the new, empty repository, after the database is restored.
        (
            _bundle_of(
                b"# v2 git bundle\n-" + b"1" * 40 + b" base\n" + b"2" * 40 + b" refs/heads/main\n\n", digest=True
            ),
            "p.bundle needs commits it does not hold",
        ),
        (_bundle_of(b"# v2 git bundle\n", head="refs/heads/../x"), "HEAD names no branch: 'refs/heads/../x'"),
        (_symlink_in_packages, "generic2 is a symbolic link, which no backup writes"),
        (_edit_manifest(lambda m: m["rows"].update(users=99)), "database: users holds 1 rows, the manifest counted 99"),
        (_rewrite("database.db", lambda b: b[:4096] + bytes(len(b) - 4096)), "database: "),
        (_rewrite("database.db", lambda b: b"not a database"), "database: "),
        (_newer_schema, "database: schema version 99; this gateway restores versions 1 to "),
        (lambda b: next(b.glob("keys/encryption_key")).unlink(), "key file encryption_key: manifest.json names"),
        (
            _rewrite("keys/encryption_key", lambda b: b[:5]),
            "key file encryption_key: storage.encryption_key: expected 32",
        ),
    ],
)
def test_restore_check_finds_what_is_damaged(
    gw: Gateway, tmp_path: Path, damage: Callable[[Path], None], message: str
) -> None:
    backup = _backup_to_check(gw, tmp_path)
    damage(backup)
    fresh = new_installation(tmp_path / "fresh")
    before = files_of(tmp_path)
    checked = fresh.run("restore", str(backup), "--check")
    assert checked.returncode == 1 and checked.stdout == "", checked.stdout
    assert message in checked.stderr and "Traceback" not in checked.stderr, checked.stderr
    assert re.search(rf"gateway: error: {re.escape(str(backup))}: \d+ problems? found$", checked.stderr), checked.stderr
    assert files_of(tmp_path) == before


async def _database_of_release(path: Path, release: int) -> None:
    """A database as an earlier release left it (migrations 1 to `release`), holding a group whose name's lower-case
    key that release never wrote (migration 0008 adds the keys)."""
    from gateway.store import sqlite as module
    from gateway.store.sqlite import SQLiteStore

    known = module.migrations()
    store = await SQLiteStore(path).open()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(module, "migrations", lambda: [m for m in known if m[0] <= release])
            assert await store.migrate() == release
        async with store._tx() as db:
            await db.execute(
                "INSERT INTO namespaces (kind, name, path, full_path, traversal_ids, visibility, description,"
                " created_at) VALUES ('group', 'ÉMILE Group', 'emile', 'emile', '', 'public', '', ?)",
                (NOW.isoformat(),),
            )
            await db.execute("UPDATE namespaces SET traversal_ids = CAST(id AS TEXT)")
    finally:
        await store.close()


@pytest.mark.parametrize("release", [4, 7])  # 4: before the audit trail's table and the last-use columns (0005)
@pytest.mark.parametrize(
    ("command", "said"),
    [
        (["restore", "{backup}"], "a backup of schema version {release}, copied and then migrated to {latest}"),
        (
            ["store", "copy", "--from", "sqlite:///{backup}/database.db"],
            "an earlier release's database (schema version {release}), copied as it is and then migrated to {latest}",
        ),
    ],
)
def test_a_database_of_an_earlier_release_is_copied_into_this_one(
    tmp_path: Path, command: list[str], said: str, release: int
) -> None:
    """Restore (a backup) and store copy --from (an old installation's database) copy a database at release 7's
    schema as it is, then migrate the copy to this release's, as `gateway migrate` would have migrated the
    installation itself; the file they were given is not touched."""
    backup = tmp_path / "backup"
    backup.mkdir()
    asyncio.run(_database_of_release(backup / "database.db", release))
    manifest = {"format": "deploy-token-gateway backup", "version": 1, "database": "database.db", "keys": {}}
    (backup / "manifest.json").write_text(json.dumps(manifest))
    before = files_of(backup)
    fresh = new_installation(tmp_path / "fresh")
    checked = fresh.run("restore", str(backup), "--check")  # the tables that release had, counted
    assert checked.returncode == 0 and f"rows, schema version {release}" in checked.stderr, checked.stderr
    restored = fresh.run(*[part.format(backup=backup) for part in command])
    assert restored.returncode == 0, restored.stderr
    assert said.format(release=release, latest=bundled("sqlite")[-1][0]) in restored.stderr, restored.stderr
    assert files_of(backup) == before

    async def groups_found() -> list[str]:
        store = await open_store(fresh.config())
        try:
            listing = Listing(open=("public",), search="émile")  # found by the key migration 0008 wrote
            return [g.name for g in (await store.page_groups(listing, offset=0, limit=10)).items]
        finally:
            await store.close()

    assert asyncio.run(groups_found()) == ["ÉMILE Group"]


@pytest.mark.parametrize(
    ("earlier", "message"),
    [
        ("nowhere", "no manifest.json in"),
        ("half", "not a backup, or one that did not finish"),
        ("tuesday", "no manifest.json in"),  # the new backup's own folder
    ],
)
def test_a_link_dest_that_is_no_earlier_backup_is_refused(
    gw: Gateway, tmp_path: Path, earlier: str, message: str
) -> None:
    (tmp_path / "half" / "packages").mkdir(parents=True)  # a backup that did not finish: no manifest
    result = gw.run("backup", str(tmp_path / "tuesday"), "--link-dest", str(tmp_path / earlier))
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "tuesday").exists() or not any((tmp_path / "tuesday").iterdir())


@pytest.mark.parametrize(
    "command", [["init"], ["migrate"], ["serve", "--listen", "127.0.0.1:0"], ["users", "tokens", "root"]]
)
def test_a_database_migrated_by_a_newer_release_is_refused(gw: Gateway, command: list[str]) -> None:
    """A replica left on an older release (restarted during a rolling upgrade) must not serve the newer schema."""
    database = gw.folder / "data" / "gateway.db"
    with sqlite3.connect(database) as db:
        (latest,) = db.execute("SELECT max(version) FROM schema_version").fetchone()
        db.execute("INSERT INTO schema_version VALUES (?, 'from_a_newer_release.sql', '2027-01-01')", (latest + 1,))
    result = gw.run(*command)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(
        f"gateway: error: the database is at schema version {latest + 1}, newer than this gateway's {latest}"
    ), result.stderr
    assert "Traceback" not in result.stderr and "listening on" not in result.stderr


@pytest.mark.parametrize(
    "command", [["init"], ["migrate"], ["serve", "--listen", "127.0.0.1:0"], ["users", "tokens", "root"]]
)
def test_a_damaged_database_is_an_error_that_ends_the_command(gw: Gateway, command: list[str]) -> None:
    """A database file SQLite cannot read (a damaged disk, a truncated copy): the error is printed and the process
    ends, rather than waiting forever on the connection thread the failed open left behind."""
    database = gw.folder / "data" / "gateway.db"
    database.write_bytes(b"not an SQLite database" * 100)
    result = gw.run(*command)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("gateway: error: cannot open database: file is not a database"), result.stderr
    assert "Traceback" not in result.stderr and "listening on" not in result.stderr


def test_serve_exits_when_a_start_up_step_fails(gw: Gateway) -> None:
    """After the store opened: the brute-force guard's first read fails (its table is gone). The error is printed
    and the process ends, rather than waiting forever on the store's connection thread."""
    with sqlite3.connect(gw.folder / "data" / "gateway.db") as db:
        db.execute("DROP TABLE auth_failures")
    result = gw.run("serve", "--listen", "127.0.0.1:0")
    assert result.returncode == 1, result.stderr
    assert "gateway: error: database error: no such table: auth_failures" in result.stderr
    assert "listening on" not in result.stderr


@pytest.mark.parametrize("command", ["init", "migrate"])
def test_unusable_paths_are_clear_errors(fresh: Gateway, command: str) -> None:
    (fresh.folder / "blocker").write_text("a file where a folder should be")
    fresh.config_file.write_text(fresh.config_file.read_text() + 'database = "sqlite:///blocker/gateway.db"\n')
    result = fresh.run(command)
    assert result.returncode == 1
    assert result.stderr.startswith("gateway: error: ") and "blocker" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_answers_health_and_stops_on_sigterm(gw: Gateway) -> None:
    server = Server(gw, "--listen", "127.0.0.1:0")
    try:
        port = int(server.url.rsplit(":", 1)[1])
        assert server.url == f"http://127.0.0.1:{port}" and port != 0
        status, body = server.get("/-/health")
        assert status == 200, body
    finally:
        code = server.stop()
    assert code == 0
    messages = [entry.get("message") for entry in server.log]
    assert "shutting down" in messages
    access = [entry for entry in server.log if entry.get("logger") == "gateway.access"]
    assert [(e["path"], e["status"]) for e in access] == [("/-/health", 200)]


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_second_stop_signal_cuts_what_the_first_lets_finish(gw: Gateway, stop_signal: signal.Signals) -> None:
    """The first Ctrl-C (or SIGTERM) lets requests in flight finish, for up to server.shutdown_timeout (60 s); the
    second ends them now, as an operator pressing Ctrl-C again expects: the client's connection is cut, the server
    exits 0 at once, with no traceback."""
    token = gw.run("users", "token", "root").stdout.strip()
    server = Server(gw, "--listen", "127.0.0.1:0")
    try:
        port = int(server.url.rsplit(":", 1)[1])
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        # A request whose body has not all come: its handler waits for the rest, in flight.
        slow.sendall(
            f"POST /api/v4/groups HTTP/1.1\r\nHost: x\r\nPRIVATE-TOKEN: {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
        )
        time.sleep(0.3)
        os.kill(server.proc.pid, stop_signal)
        server.wait_log("shutting down")
        time.sleep(0.5)
        assert server.proc.poll() is None  # waiting for the request in flight
        started = time.monotonic()
        os.kill(server.proc.pid, stop_signal)
        assert server.proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
        assert slow.recv(100) == b""  # cut, not answered
        slow.close()
    finally:
        server.stop()
    assert any(str(e.get("message")).startswith("second stop signal: cutting") for e in server.log), server.log
    assert not [line for line in server.log if "Traceback" in json.dumps(line)], json.dumps(
        [e for e in server.log if "Traceback" in json.dumps(e)]
    )[:3000]


def test_serve_uses_server_listen_and_reports_a_busy_port(gw: Gateway, serve: list[Server]) -> None:
    first = Server(gw, "--listen", "127.0.0.1:0")
    serve.append(first)
    port = first.url.rsplit(":", 1)[1]
    gw.config_file.write_text(gw.config_file.read_text() + f'\n[server]\nlisten = "127.0.0.1:{port}"\n')
    busy = gw.run("serve")
    assert busy.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert "Traceback" not in busy.stderr


# --- found by a review of the operator's commands -----------------------------------------------------------------


async def test_ci_variables_never_print_a_secret_sealed_for_another_token(gw: Gateway) -> None:
    await seed(gw, {"top/app": [{}], "top/sub": [{}]})
    with sqlite3.connect(gw.folder / "data" / "gateway.db") as db:  # a copied row, as a crafted restore could make
        (sealed,) = db.execute("SELECT token_encrypted FROM deploy_tokens WHERE group_id IS NOT NULL").fetchone()
        db.execute("UPDATE deploy_tokens SET token_encrypted = ? WHERE project_id IS NOT NULL", (sealed,))
    db.close()
    result = gw.run("ci-variables", "top/app")
    assert result.returncode == 1 and result.stdout == "", result.stdout
    assert "its sealed secret is not its own" in result.stderr and "gldt-" not in result.stderr


def test_a_backup_refuses_to_leave_out_the_encryption_key(gw: Gateway, tmp_path: Path) -> None:
    key = Path(gw.config().storage.encryption_key)
    key.rename(key.with_name("elsewhere"))
    taken = gw.run("backup", str(tmp_path / "backup"))
    assert taken.returncode == 1 and "(storage.encryption_key) is missing" in taken.stderr, taken.stderr
    assert not (tmp_path / "backup").exists()


def test_key_files_of_one_name_restore_each_to_its_place_and_mode(gw: Gateway, tmp_path: Path) -> None:
    """Two key files may share a name in different folders (secrets/a/key, secrets/b/key): each is kept by its
    role; and a restored secret is readable by its owner alone, whatever mode the backup's copy has."""
    config = gw.config()
    moved = {
        "encryption_key": ("storage", Path(config.storage.encryption_key), gw.folder / "secrets" / "enc" / "key"),
        "signing_key": ("registry", Path(config.registry.signing_key), gw.folder / "secrets" / "reg" / "key"),
    }
    text = gw.config_file.read_text()
    for name, (section, old, new) in moved.items():
        new.parent.mkdir(parents=True)
        old.rename(new)
        text = text.replace(f"[{section}]\n", f'[{section}]\n{name} = "{new}"\n', 1)
    if "[registry]\n" not in text:
        text += f'\n[registry]\nsigning_key = "{moved["signing_key"][2]}"\n'
    gw.config_file.write_text(text)
    backup = tmp_path / "backup"
    taken = gw.run("backup", str(backup))
    assert taken.returncode == 0, taken.stderr
    for copy in (backup / "keys").iterdir():
        copy.chmod(0o644)  # through object storage or an archive tool
    fresh = new_installation(tmp_path / "fresh")
    fresh.config_file.write_text(
        fresh.config_file.read_text().replace("[storage]\n", '[storage]\nencryption_key = "secrets/enc/key"\n')
        + '\n[registry]\nsigning_key = "secrets/reg/key"\n'
    )
    restored = fresh.run("restore", str(backup))
    assert restored.returncode == 0, restored.stderr
    for _, _old, new in moved.values():
        again = fresh.folder / new.relative_to(gw.folder)
        assert again.read_bytes() == new.read_bytes() and (again.stat().st_mode & 0o777) == 0o600, again


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(repositories="abc"), "`repositories` is not a list of objects"),
        (lambda m: m.update(keys=["x"]), "`keys` is not an object of file names"),
        (lambda m: m.update(repositories=[{"path": "g/p", "head": "refs/heads/main"}] * 2), "listed twice"),
        (lambda m: m.update(repositories=[{"path": "g/p"}]), "a repository without a `path` and a `head`"),
    ],
)
def test_a_malformed_manifest_is_refused_before_anything(
    gw: Gateway, tmp_path: Path, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    backup = _backup_to_check(gw, tmp_path)
    _edit_manifest(change)(backup)
    fresh = new_installation(tmp_path / "fresh")
    for args in (("--check",), ()):
        result = fresh.run("restore", str(backup), *args)
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert not (fresh.folder / "data").exists()


def test_a_locked_database_is_one_line_and_reads_go_on(gw: Gateway) -> None:
    """Another process's write transaction (a `sqlite3` shell, a backup): commands that only read work; one that
    writes says why in a line, with no traceback."""
    holder = sqlite3.connect(gw.folder / "data" / "gateway.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        listed = gw.run("users", "tokens", "root")
        assert listed.returncode == 0, listed.stderr
        created = gw.run("users", "create", "someone", "--email", "someone@example.com", stdin="pw-long-enough\n")
        assert created.returncode != 0 and "Traceback" not in created.stderr, created.stderr
        assert "database" in created.stderr and "locked" in created.stderr, created.stderr
    finally:
        holder.close()


def test_a_bundle_that_is_no_bundle_is_never_fetched(gw: Gateway, tmp_path: Path) -> None:
    """A one-line `gitdir:` file, its digest recorded too: `git fetch` would have read the repository it names."""
    other = tmp_path / "other.git"
    subprocess.run(["git", "init", "-q", "--bare", str(other)], check=True)
    backup = _backup_to_check(gw, tmp_path)
    _bundle_of(f"gitdir: {other}\n".encode(), digest=True)(backup)
    fresh = new_installation(tmp_path / "fresh")
    restored = fresh.run("restore", str(backup))
    assert restored.returncode == 1 and "is not a git bundle" in restored.stderr, restored.stderr
    assert "nothing was written" in restored.stderr and not (fresh.folder / "data").exists()


def test_a_backup_during_a_registry_key_rotation_keeps_the_staged_key(gw: Gateway, tmp_path: Path) -> None:
    staged = Path(gw.config().registry.signing_key)
    staged = staged.with_name(staged.name + ".next")
    staged.write_bytes(b"the next key, as `registry-key stage` left it")
    taken = gw.run("backup", str(tmp_path / "backup"))
    assert taken.returncode == 0, taken.stderr
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert (tmp_path / "backup" / manifest["keys"]["registry_signing_key_staged"]).read_bytes() == staged.read_bytes()
    fresh = new_installation(tmp_path / "fresh")
    restored = fresh.run("restore", str(tmp_path / "backup"))
    assert restored.returncode == 0, restored.stderr
    again = fresh.folder / staged.relative_to(gw.folder)
    assert again.read_bytes() == staged.read_bytes() and (again.stat().st_mode & 0o777) == 0o600


def test_a_manifest_that_is_no_regular_file_is_refused(gw: Gateway, tmp_path: Path) -> None:
    """A FIFO would keep restore waiting forever, a device reading forever (found by a review)."""
    backup = _backup_to_check(gw, tmp_path)
    (backup / "manifest.json").unlink()
    os.mkfifo(backup / "manifest.json")
    checked = new_installation(tmp_path / "fresh").run("restore", str(backup), "--check")
    assert checked.returncode == 1 and "manifest.json cannot be read" in checked.stderr, checked.stderr
