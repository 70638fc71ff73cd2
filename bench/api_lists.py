"""API lists against the size of the instance: a group's projects and a member's GET /projects with 5,000 projects in
the database against 50, the member's group holding 25 either way. Neither may grow with the rest of the instance
(ratio <= 1.2, like the store's lookups). Reported: an administrator's GET /projects and GET /users by name with
100,000 users against 1,000 (read down an index, but X-Total counts up to GitLab's 10,000), a user search (what a
trigram index finds), a search for a part of every user's name (where reading rows in order wins) and a keyset page
from the middle of the users by name.
"""

from __future__ import annotations

import asyncio
import http.client
import re
import shutil
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench.common import SPREAD, Context, Gateway, Row, tempdir
from gateway import config as config_module
from gateway.api.pagination import encode_cursor
from gateway.store import open_store
from gateway.store.seed import fresh_statistics, seed_users

PER_GROUP = 25
# Requests per block, blocks per side: the two installations are asked in turns, so a drift of the VM hits both.
BLOCK, BLOCKS = 20, 12


# The user whose name a search looks for (store/seed.py names users by a hash of their number): a part of its hex
# digits, which a handful of others share.
SOUGHT = 4242


# Keyset pagination's next page from the middle of the users by name (seeded names run from "User 00000000" to
# "User ffffffff"): read from the cursor on, where an offset would count every user before it.
MIDDLE_PAGE = urlencode(
    {
        "pagination": "keyset",
        "order_by": "name",
        "sort": "asc",
        "per_page": "20",
        "cursor": encode_cursor({"name": "User 80000000", "id": "0"}),
    }
)


def sought_part() -> str:
    return f"{SOUGHT * 2654435761 % 2**32:08x}"[-5:]


async def seed(config_file: Path, groups: int, users: int) -> int:
    """`groups` top-level groups of PER_GROUP private projects each and `users` users, straight into the store; the
    first group's id."""
    config = config_module.load(config_file)
    store = await open_store(config)
    try:
        now = datetime.now(UTC)
        await seed_users(store, count=users, now=now)
        first = 0
        for g in range(groups):
            group = await store.create_group(
                name=f"g{g}", path=f"g{g}", parent_id=None, visibility="private", description="", now=now
            )
            first = first or group.id
            for p in range(PER_GROUP):
                await store.create_project(
                    namespace_id=group.id,
                    name=f"p{p}",
                    path=f"p{p}",
                    visibility="private",
                    description="",
                    creator_id=None,
                    now=now,
                )
        await fresh_statistics(store)  # as a database that grew to this size has them
        return first
    finally:
        await store.close()


def latency(base: str, path: str, token: str) -> float:
    """One request on a new connection, seconds until the whole answer is read."""
    host, port = base.removeprefix("http://").split(":")
    started = time.perf_counter()
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("GET", path, headers={"PRIVATE-TOKEN": token})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status}")
    finally:
        connection.close()
    return time.perf_counter() - started


def run(ctx: Context) -> list[Row]:
    sizes = {"small": 2, "large": ctx.pick(200, 40)}  # groups of PER_GROUP projects
    users = {"small": 1000, "large": ctx.pick(100_000, 10_000)}
    tmp = tempdir("bench-lists-")
    installs: dict[str, dict[str, Any]] = {}
    try:
        for label, groups in sizes.items():
            gw = Gateway(tmp / label, ctx, {"log": {"level": "warning"}}).install()
            group_id = asyncio.run(seed(gw.config_file, groups, users[label]))
            # Each side served by SPREAD processes, block b through process b % SPREAD: one process's luck (its
            # memory layout; two identical processes differ by up to 10 %) would otherwise weigh on one side only.
            urls = [gw.serve(1, f"gateway-{label}-{n}") for n in range(SPREAD)]
            url = urls[0]
            made = re.search(r"\(id (\d+)\)", gw.cli("users", "create", "dev"))
            assert made is not None
            member = gw.cli("users", "token", "dev").strip()
            gw.api(url, "POST", f"/groups/{group_id}/members", {"user_id": int(made.group(1)), "access_level": 30})
            installs[label] = {"gw": gw, "urls": urls, "group": group_id, "member": member}
        asks: dict[str, Callable[[dict[str, Any]], tuple[str, str]]] = {
            "group": lambda i: (f"/api/v4/groups/{i['group']}/projects?include_subgroups=true", i["member"]),
            "member": lambda i: ("/api/v4/projects?per_page=20", i["member"]),
            "admin": lambda i: ("/api/v4/projects?per_page=20", i["gw"].root_token),
            "users-name": lambda i: ("/api/v4/users?order_by=name&sort=asc&per_page=20", i["member"]),
            "users-search": lambda i: (f"/api/v4/users?search={sought_part()}&per_page=20", i["member"]),
            "users-common": lambda i: ("/api/v4/users?search=user&per_page=20", i["member"]),
            "users-keyset": lambda i: (f"/api/v4/users?{MIDDLE_PAGE}", i["member"]),
        }
        times: dict[tuple[str, str], list[float]] = {(a, s): [] for a in asks for s in sizes}
        for block in range(BLOCKS):
            for ask, make in asks.items():
                for label, install in installs.items():
                    path, token = make(install)
                    url = install["urls"][block % SPREAD]
                    latency(url, path, token)  # warm: the token and the caches
                    times[ask, label] += [latency(url, path, token) for _ in range(BLOCK)]
    finally:
        for install in installs.values():
            install["gw"].stop()
        shutil.rmtree(tmp, ignore_errors=True)
    projects = {label: f"{groups * PER_GROUP:,} projects" for label, groups in sizes.items()}
    people = {label: f"{count:,} users" for label, count in users.items()}
    rows = []
    for ask, figure, sizes_of, target in (
        ("group", "GET /groups/:id/projects?include_subgroups=true (25 projects), member", projects, 1.2),
        ("member", "GET /projects?per_page=20, member of one group of 25", projects, 1.2),
        ("admin", "GET /projects?per_page=20, administrator (pages every project)", projects, None),
        ("users-name", "GET /users?order_by=name&per_page=20 (X-Total counts to 10,000)", people, None),
        ("users-search", f"GET /users?search={sought_part()} (a part of a handful of names)", people, None),
        ("users-common", "GET /users?search=user (a part of every user's name)", people, None),
        ("users-keyset", "GET /users?pagination=keyset&order_by=name, a page from the middle", people, None),
    ):
        large, small = (statistics.median(times[ask, s]) * 1000 for s in ("large", "small"))
        ratio = large / small
        rows.append(
            Row(
                f"{figure}: {sizes_of['large']} vs {sizes_of['small']} in the instance",
                f"{large:.1f} ms",
                f"{small:.1f} ms (median of {BLOCK * BLOCKS})",
                f"{ratio:.2f}",
                f"<= {target}" if target else "(reported)",
                ratio <= target if target else None,
            )
        )
    return rows
