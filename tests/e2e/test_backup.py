"""README "Backup and restore": the database copied with `store copy --to` while the gateway serves and writes (one
snapshot), then restored with `store copy --from` into the database of a data folder whose own database was lost.
Every token in the snapshot works on the restored installation, and none made after it appears."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

from tests.replicas import api, basic, init, new_project, request, start_replica
from tests.servers import run_gateway, write_config

PAGE = 100  # the API's largest page


def test_a_backup_taken_while_serving_restores_every_token_it_holds(tmp_path: Path) -> None:
    config = write_config(tmp_path / "live")
    root = init(config)
    backup = tmp_path / "backups" / "gateway.db"
    live = start_replica("live", config)
    try:
        project = new_project(live.url, root, "team")
        tokens = f"/projects/{project.id}/deploy_tokens"
        ci = api(live.url, root, "POST", tokens, {"name": "gitlab-deploy-token", "scopes": ["read_repository"]})
        made: list[dict[str, Any]] = []
        done = threading.Event()

        def write() -> None:  # tokens created through the API for as long as the backup runs (one page of them)
            while not done.is_set() and len(made) < PAGE - 1:
                made.append(api(live.url, root, "POST", tokens, {"name": "w", "scopes": ["read_repository"]}))
                time.sleep(0.005)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            while len(made) < 5:
                time.sleep(0.01)
            copied = run_gateway(config, "store", "copy", "--to", f"sqlite:///{backup}")
        finally:
            done.set()
            writer.join()
        assert copied.returncode == 0, copied.stderr
        in_backup = re.search(r"^  deploy_tokens +(\d+) +(\d+)$", copied.stdout, re.M)
        assert in_backup is not None, copied.stdout
        count, next_id = int(in_backup.group(1)), int(in_backup.group(2))
        assert 1 + 5 <= count <= 1 + len(made)
        ci_variables = run_gateway(config, "ci-variables", project.path)
        assert ci_variables.returncode == 0, ci_variables.stderr
    finally:
        live.stop()

    # The database is lost; the data folder (keys, repositories) survived or was restored from its own backup.
    for lost in (tmp_path / "live" / "data").glob("gateway.db*"):
        lost.unlink()
    restored = run_gateway(config, "store", "copy", "--from", f"sqlite:///{backup}")
    assert restored.returncode == 0, restored.stderr
    again = start_replica("restored", config)
    try:
        # Root's personal access token is in the snapshot too.
        listed = api(again.url, root, "GET", f"{tokens}?per_page={PAGE}")
        snapshot = [ci, *made[: count - 1]]  # ids in creation order: the snapshot holds a prefix of them
        assert [t["id"] for t in listed] == [t["id"] for t in snapshot]
        assert next_id == snapshot[-1]["id"] + 1
        refs = f"{again.url}/{project.path}.git/info/refs?service=git-upload-pack"
        for token in (ci, snapshot[-1]):
            assert request(refs, headers=basic(token["username"], token["token"])) == 200
        if len(made) > count - 1:  # a token created after the snapshot
            late = made[count - 1]
            assert request(refs, headers=basic(late["username"], late["token"])) == 401
        assert run_gateway(config, "ci-variables", project.path).stdout == ci_variables.stdout
    finally:
        again.stop()
