"""`gateway encryption-key rotate / activate / retire` under a running two-worker gateway: the CI secrets stay
readable at every step, docker's refresh tokens keep working until the old key is retired, and none after.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from gateway import key_watch
from tests.procs import live, processes, wait_until
from tests.replicas import Project, Replica, deploy_token, init, new_project, start_replica
from tests.servers import run_gateway, write_config

CI_TOKEN = "gitlab-deploy-token"


def encryption_key(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_gateway(config, "encryption-key", *args)


def ci_password(config: Path, project: Project) -> str:
    shown = run_gateway(config, "ci-variables", project.path)
    assert shown.returncode == 0, shown.stderr
    found = re.search(r"^CI_DEPLOY_PASSWORD=(.*)$", shown.stdout, re.MULTILINE)
    assert found is not None, shown.stdout
    return found.group(1)


def jwt_auth(gateway: Replica, form: dict[str, str]) -> tuple[int, dict[str, str]]:
    """The OAuth2 POST of /jwt/auth, as `docker login` sends it (password grant, offline) and later refreshes."""
    parts = urlsplit(gateway.url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        connection.request("POST", "/jwt/auth", urlencode(form), headers)
        response = connection.getresponse()
        answer: dict[str, str] = json.loads(response.read())
        return response.status, answer
    finally:
        connection.close()


def login(gateway: Replica, username: str, password: str) -> str:
    form = {"grant_type": "password", "service": "container_registry", "access_type": "offline"}
    status, answer = jwt_auth(gateway, {**form, "username": username, "password": password})
    assert status == 200, answer
    return answer["refresh_token"]


def refreshes(gateway: Replica, refresh_token: str, project: Project) -> list[int]:
    """What each of several refresh grants is answered (enough for both workers to answer: they reload apart)."""
    form = {"grant_type": "refresh_token", "service": "container_registry", "refresh_token": refresh_token}
    return [jwt_auth(gateway, {**form, "scope": f"repository:{project.path}:pull"})[0] for _ in range(6)]


def sealed_by(config: Path) -> str:
    shown = encryption_key(config, "show")
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.strip().splitlines()[-1]


def reloaded(gateway: Replica, times: int, *, signal_it: bool) -> None:
    """Every worker loaded the key files again (the `times`-th reload of the run is logged): at once on a SIGHUP to
    the supervisor, else by each worker's own check of the files (key_watch.CHECK_INTERVAL)."""
    if signal_it:
        os.kill(gateway.proc.pid, signal.SIGHUP)
    count = lambda: gateway.log.read_text().count("encryption keys reloaded")  # noqa: E731
    timeout = 5 if signal_it else key_watch.CHECK_INTERVAL + 5
    assert wait_until(lambda: count() >= times, timeout), gateway.log.read_text()[-2000:]


def settled(config: Path) -> None:
    """key_watch.SETTLE has passed since the last step, as far as the steps can tell (the files' times): the
    test's processes reloaded already, and waiting it out would only slow the run."""
    earlier = time.time() - key_watch.SETTLE - 1
    for path in (config.parent / "data").glob("secret.key*"):
        os.utime(path, (earlier, earlier))


def test_the_encryption_key_rotates_while_secrets_and_logins_keep_working(tmp_path: Path) -> None:
    config = write_config(tmp_path / "gw")
    root = init(config)
    key = config.parent / "data" / "secret.key"
    gateway = start_replica("gw", config, workers=2)
    try:
        first = new_project(gateway.url, root, "first")
        ci = deploy_token(gateway.url, root, first, name=CI_TOKEN, scopes=("read_registry",))
        refresh_old = login(gateway, ci["username"], ci["token"])
        old_id = encryption_key(config, "show").stdout.split()[1]
        assert sealed_by(config) == f"sealed secrets: 1 by {old_id}"

        # 1. A new key is staged; the active one seals on.
        staged = encryption_key(config, "rotate")
        assert staged.returncode == 0, staged.stderr
        new_id = staged.stdout.split()[3]
        assert (key.with_name("secret.key.next").stat().st_mode & 0o777) == 0o600
        assert f"staged    {new_id}" in encryption_key(config, "show").stdout.splitlines()
        early = encryption_key(config, "activate")  # not every process has loaded the staged key yet
        # Refused for the settle time (30 s), however long the commands took on a busy machine.
        assert early.returncode == 1 and re.search(r"the key was staged \d s ago", early.stderr), early.stderr
        backup = tmp_path / "backup"
        made = run_gateway(config, "backup", str(backup))
        assert made.returncode == 0, made.stderr
        manifest = json.loads((backup / "manifest.json").read_text())
        assert (
            manifest["keys"]["encryption_key_staged"] == "keys/encryption_key_staged"
        )  # a restore opens what it seals
        assert (backup / "keys" / "encryption_key_staged").read_bytes() == key.with_name("secret.key.next").read_bytes()
        reloaded(gateway, 2, signal_it=False)  # no signal: each worker finds the new file within its interval
        settled(config)

        # 2. Activated: the secret is sealed again with the new key. The workers, not reloaded yet, seal with the
        # old one (a token made now), and open what the new one sealed, which they loaded as staged.
        activated = encryption_key(config, "activate")
        assert activated.returncode == 0, activated.stderr
        assert f"activated encryption key {new_id}; {old_id} is retiring" in activated.stdout
        assert "sealed again with the new key: 1 secret" in activated.stdout
        assert not key.with_name("secret.key.next").exists()
        assert sealed_by(config) == f"sealed secrets: 1 by {new_id}, 0 by {old_id}"
        second = new_project(gateway.url, root, "second")
        straggler = deploy_token(gateway.url, root, second, name=CI_TOKEN, scopes=("read_registry",))
        assert sealed_by(config) == f"sealed secrets: 1 by {new_id}, 1 by {old_id}"
        assert [ci_password(config, p) for p in (first, second)] == [ci["token"], straggler["token"]]
        assert set(refreshes(gateway, refresh_old, first)) == {200}
        reloaded(gateway, 4, signal_it=True)
        refresh_new = login(gateway, ci["username"], ci["token"])
        assert set(refreshes(gateway, refresh_old, first)) == {200}  # the retiring key still checks its own
        assert set(refreshes(gateway, refresh_new, first)) == {200}

        # 3. Retirement waits out the old key's refresh tokens, unless told not to; it seals the straggler again.
        too_soon = encryption_key(config, "retire", "--now")  # a process may still seal with the old key
        assert too_soon.returncode == 1 and "s ago: every gateway process loads the key files" in too_soon.stderr
        settled(config)
        soon = encryption_key(config, "retire")
        assert soon.returncode == 1 and "refresh tokens MACed with the retiring key live until" in soon.stderr
        assert key.with_name("secret.key.previous").exists()
        retired = encryption_key(config, "retire", "--now")
        assert retired.returncode == 0, retired.stderr
        assert f"retired encryption key {old_id}; sealed again with the active key: 1 secret" in retired.stdout
        assert not key.with_name("secret.key.previous").exists()
        again = encryption_key(config, "retire", "--now")
        assert (again.returncode, again.stdout) == (0, "nothing to retire: no key is retiring\n"), again.stderr
        assert sealed_by(config) == f"sealed secrets: 2 by {new_id}"
        assert [ci_password(config, p) for p in (first, second)] == [ci["token"], straggler["token"]]
        reloaded(gateway, 6, signal_it=False)
        # The old key's refresh token is refused everywhere (a client logs in again); the new key's works.
        assert set(refreshes(gateway, refresh_old, first)) == {401}
        assert set(refreshes(gateway, refresh_new, first)) == {200}
        created = deploy_token(gateway.url, root, new_project(gateway.url, root, "third"), name=CI_TOKEN)
        assert sealed_by(config) == f"sealed secrets: 3 by {new_id}"
        assert created["token"] not in gateway.log.read_text()
        gateway.proc.assert_running()
    finally:
        gateway.stop()


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (["activate"], "no key is staged"),
        (["rotate", "rotate"], "a key is already staged"),
        (["rotate", "activate"], r"the key was staged \d s ago"),
        (["rotate", "wait", "activate", "rotate"], "is not retired yet"),
        (["rotate", "wait", "activate", "retire --now"], r"the key was activated \d s ago"),
        (["rotate", "wait", "activate", "wait", "retire"], "refresh tokens MACed with the retiring key live until"),
    ],
)
def test_a_step_out_of_order_is_refused_and_changes_nothing(tmp_path: Path, steps: list[str], message: str) -> None:
    """("wait": key_watch.SETTLE passes.)"""
    config = write_config(tmp_path / "gw")
    init(config)
    *before, last = steps
    for step in before:
        if step == "wait":
            settled(config)
        else:
            assert encryption_key(config, step).returncode == 0
    files = {p: p.read_bytes() for p in (config.parent / "data").glob("secret.key*")}
    refused = encryption_key(config, *last.split())
    # (a message's seconds are whatever the steps took on a busy machine: a pattern)
    assert refused.returncode == 1 and re.search(message, refused.stderr), refused.stderr
    assert "Traceback" not in refused.stderr
    assert {p: p.read_bytes() for p in (config.parent / "data").glob("secret.key*")} == files


def test_a_worker_restarted_after_a_rotation_with_a_broken_key_file_seals_with_the_files_active_key(
    tmp_path: Path,
) -> None:
    """A whole rotation without a signal: the workers follow the files, their supervisor still holds the first key
    (deleted since). Then a staged key no process can load (half-written, another owner's 0600 file), and a worker
    crash: the new worker starts with the active key of the files, not the deleted one its supervisor holds, and
    leaves out only the damaged file (no crash loop that ends with the supervisor giving up on the gateway)."""
    config = write_config(tmp_path / "gw")
    root = init(config)
    data = config.parent / "data"
    gateway = start_replica("gw", config, workers=2)

    def workers() -> list[str]:
        return sorted(str(p.pid) for p in processes() if p.ppid == gateway.proc.pid and live(p))

    def all_hold(keys: list[str]) -> bool:
        """Every worker running reports `keys` (a killed one's report stays until it ages out)."""
        found = reported(config)
        return all(found.get(pid) == keys for pid in workers())

    try:
        first = encryption_key(config, "show").stdout.split()[1]
        second = encryption_key(config, "rotate").stdout.split()[3]
        assert wait_until(lambda: all_hold([first, second]), key_watch.CHECK_INTERVAL + 5), reported(config)
        settled(config)
        assert encryption_key(config, "activate").returncode == 0
        assert wait_until(lambda: all_hold([second, first]), key_watch.CHECK_INTERVAL + 5), reported(config)
        settled(config)
        retired = encryption_key(config, "retire", "--now")
        assert retired.returncode == 0, retired.stderr
        assert wait_until(lambda: all_hold([second]), key_watch.CHECK_INTERVAL + 5), reported(config)

        assert encryption_key(config, "rotate").returncode == 0
        (data / "secret.key.next").write_bytes(b"short")
        for _ in range(3):
            ready = gateway.log.read_text().count("worker ready")
            os.kill(int(workers()[0]), signal.SIGKILL)
            assert wait_until(lambda r=ready: gateway.log.read_text().count("worker ready") > r, 20)  # type: ignore[misc]
        gateway.proc.assert_running()
        assert wait_until(lambda: all_hold([second]), key_watch.CHECK_INTERVAL + 5), reported(config)
        assert "encryption key file left out, the other keys are in use" in gateway.log.read_text()
        project = new_project(gateway.url, root, "after")
        made = deploy_token(gateway.url, root, project, name=CI_TOKEN)  # sealed with the files' active key
        shown = run_gateway(config, "ci-variables", project.path)  # a command says which file, and goes on
        assert shown.returncode == 0 and f"CI_DEPLOY_PASSWORD={made['token']}" in shown.stdout, shown.stderr
        assert "warning: encryption key file left out" in shown.stderr and "secret.key.next" in shown.stderr
        damaged = encryption_key(config, "show").stdout
        assert "damaged   " in damaged and "expected 32 bytes, got 5" in damaged
        assert damaged.splitlines()[-1] == f"sealed secrets: 1 by {second}"
    finally:
        gateway.stop()


def test_show_and_activate_after_an_activation_cut_short(tmp_path: Path) -> None:
    """The two ways an activation stops halfway: a crash between its renames, and a database that does not answer
    (the files are not touched then). Running it again finishes it either way."""
    config = write_config(tmp_path / "gw")
    init(config)
    key = config.parent / "data" / "secret.key"
    database = config.parent / "data" / "gateway.db"
    assert encryption_key(config, "rotate").returncode == 0
    settled(config)
    database.rename(database.with_name("moved.db"))
    database.mkdir()  # no database can be opened there
    files = {p: p.read_bytes() for p in key.parent.glob("secret.key*")}
    down = encryption_key(config, "activate")
    assert down.returncode == 1 and "cannot open database" in down.stderr, down.stderr
    assert {p: p.read_bytes() for p in key.parent.glob("secret.key*")} == files
    database.rmdir()
    database.with_name("moved.db").rename(database)
    old_id = encryption_key(config, "show").stdout.split()[1]
    os.link(key, key.with_name("secret.key.previous"))  # activation's first step, then a crash
    shown = encryption_key(config, "show").stdout.splitlines()
    assert shown[2] == f"retiring  {old_id}  the active key itself: an activation was cut short, run `activate` again"
    cut = encryption_key(config, "retire", "--now")
    assert cut.returncode == 1 and "a key is staged: `gateway encryption-key activate` it" in cut.stderr
    finished = encryption_key(config, "activate")
    assert finished.returncode == 0 and f"{old_id} is retiring" in finished.stdout, finished.stderr
    assert encryption_key(config, "show").stdout.splitlines()[1].startswith(f"retiring  {old_id}  retire after ")


def reported(config: Path) -> dict[str, list[str]]:
    """pid → the key ids each running gateway process reports it holds (sealing one first), from `show`."""
    found = {}
    for line in encryption_key(config, "show").stdout.splitlines():
        if line.startswith("process "):
            words = line.replace(",", "").split()
            seals = words.index("seals")
            found[words[3]] = [words[seals + 2], *words[seals + 5 :]]  # "seals with A[, opens with B C]"
    return found


def test_a_replica_with_its_own_copy_of_the_keys_holds_each_step_back_until_it_has_them(tmp_path: Path) -> None:
    """Each process reports the keys it holds (key_holders.py): a step goes ahead only when every process running
    holds what it needs. Here a replica keeps its own copy of the key files, updated by hand (late)."""
    config = write_config(tmp_path / "a")
    init(config)
    data = config.parent / "data"
    own = tmp_path / "b" / "keys"
    own.mkdir(parents=True)
    shutil.copy2(data / "secret.key", own / "secret.key")
    storage = {"database": f"sqlite:///{data / 'gateway.db'}", "encryption_key": str(own / "secret.key")}
    config_b = write_config(tmp_path / "b", sections={"storage": storage})
    a, b = start_replica("a", config), start_replica("b", config_b)
    pid_a, pid_b = str(a.proc.pid), str(b.proc.pid)

    def holding(wanted: dict[str, list[str]]) -> None:
        assert wait_until(lambda: reported(config) == wanted, 10), reported(config)

    def sighup(*replicas: Replica) -> None:
        for replica in replicas:
            os.kill(replica.proc.pid, signal.SIGHUP)  # reloads, and reports what it holds, at once

    try:
        old_id = encryption_key(config, "show").stdout.split()[1]
        holding({pid_a: [old_id], pid_b: [old_id]})
        new_id = encryption_key(config, "rotate").stdout.split()[3]
        sighup(a)
        holding({pid_a: [old_id, new_id], pid_b: [old_id]})
        settled(config)
        files = {p: p.read_bytes() for p in data.glob("secret.key*")}
        lacking = encryption_key(config, "activate")
        assert lacking.returncode == 1, lacking.stderr
        assert f"1 of 2 running gateway processes lack the staged key: {socket.gethostname()} pid {pid_b}" in (
            lacking.stderr
        )
        assert {p: p.read_bytes() for p in data.glob("secret.key*")} == files

        shutil.copy2(data / "secret.key.next", own / "secret.key.next")
        sighup(b)
        holding({pid_a: [old_id, new_id], pid_b: [old_id, new_id]})
        activated = encryption_key(config, "activate")
        assert activated.returncode == 0, activated.stderr
        sighup(a)
        holding({pid_a: [new_id, old_id], pid_b: [old_id, new_id]})
        settled(config)
        still = encryption_key(config, "retire", "--now")
        assert still.returncode == 1, still.stderr
        assert f"processes still seal with the old key: {socket.gethostname()} pid {pid_b}" in still.stderr
        assert (data / "secret.key.previous").exists()

        for name in ("secret.key", "secret.key.previous"):
            shutil.copy2(data / name, own / name)
        (own / "secret.key.next").unlink()
        sighup(b)
        holding({pid_a: [new_id, old_id], pid_b: [new_id, old_id]})
        retired = encryption_key(config, "retire", "--now")
        assert retired.returncode == 0, retired.stderr
        b.stop()  # a process that stops says so: the next step does not wait for it
        assert list(reported(config)) == [pid_a]
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize(
    ("age", "kind"),
    [
        (5, "process"),  # running: the steps wait for it
        (90, "quiet"),  # gone without a word: named, not waited for
        (2 * 86400, None),  # forgotten
    ],
)
def test_show_names_a_process_by_the_age_of_its_last_report(tmp_path: Path, age: int, kind: str | None) -> None:
    """A process that stopped reporting without a word (killed, or cut off from the database) is not waited for by
    the steps, but `show` names it for a day, so that a replica gone quiet while it serves is noticed."""
    config = write_config(tmp_path / "gw")
    init(config)
    key_id = encryption_key(config, "show").stdout.split()[1]
    seen = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() - age))
    with sqlite3.connect(config.parent / "data" / "gateway.db") as db:
        db.execute("INSERT INTO key_holders VALUES ('otherhost:4242:ab', ?, '', ?)", (key_id, seen))
    db.close()
    for command in ("encryption-key", "registry-key"):
        shown = run_gateway(config, command, "show")
        assert shown.returncode == 0, shown.stderr
        mentions = [text for text in shown.stdout.splitlines() if "otherhost" in text]
        if kind is None:
            assert mentions == []
            continue
        assert len(mentions) == 1, mentions
        found = re.match(rf"{kind} +otherhost pid 4242 \(reported (\d+) s ago\)(.*)$", mentions[0])
        assert found is not None and age <= int(found.group(1)) <= age + 10, mentions
        rest = found.group(2)
        if kind == "quiet":
            assert rest == ": killed, or cannot reach the database; not waited for"
        else:
            assert rest.startswith("  seals with" if command == "encryption-key" else "  signs with"), rest
