"""tests/unstorable_text.py on PostgreSQL, which refuses a NUL in text: each request gets the answer it gets on
SQLite (tests/integration/test_api_bad_input.py), never a 500."""

from __future__ import annotations

import asyncio
import http.client
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pg, unstorable_text
from tests.replicas import Replica, api, init, start_replica
from tests.servers import write_config


@pytest.fixture(scope="module")
def gateway(postgres: pg.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Replica, str]]:
    dsn = asyncio.run(postgres.create_database(f"text_{uuid.uuid4().hex[:12]}"))
    config = write_config(Path(tmp_path_factory.mktemp("unstorable")), sections={"storage": {"database": dsn}})
    root = init(config)
    replica = start_replica("postgresql", config)
    try:
        group = api(replica.url, root, "POST", "/groups", {"name": "g", "path": "g"})
        api(replica.url, root, "POST", "/projects", {"name": "p", "path": "p", "namespace_id": group["id"]})
        yield replica, root
    finally:
        replica.stop()


@pytest.mark.parametrize("case", unstorable_text.CASES, ids=lambda c: f"{c.method} {c.path}")
def test_text_no_database_stores_is_refused_or_found_nowhere(
    gateway: tuple[Replica, str], case: unstorable_text.Case
) -> None:
    replica, root = gateway
    host, port = replica.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(case.method, case.path, case.raw_body(), unstorable_text.headers(case, root))
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    assert response.status == case.status, data[:300]
    if case.answer is not None:
        assert json.loads(data) == case.answer
