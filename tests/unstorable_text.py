"""Requests carrying text no database stores (a NUL; a lone surrogate, which JSON's "\\ud800" escape makes) in every
kind of parameter, with the answer each must get: the same on SQLite and PostgreSQL, never a 500.

Used by tests/integration/test_api_bad_input.py (SQLite, in process) and tests/e2e/test_unstorable_text.py
(PostgreSQL, which refuses a NUL in text: these were 500s there).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

NUL, SURROGATE = "\x00", "\ud800"


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # the group is `g` (its owner sends the request), its project `g/p`
    body: dict[str, Any] | None
    status: int
    answer: dict[str, Any] | None  # the JSON answer, when it is one
    basic_user: str | None = None  # sign in with HTTP Basic as this user (a bad secret) instead of root's token

    def raw_body(self) -> bytes | None:
        # json.dumps escapes a surrogate as "\ud800", as a client sending one would.
        return None if self.body is None else json.dumps(self.body).encode()


PAT = "/api/v4/users/1/personal_access_tokens"
CASES = [
    Case("GET", "/api/v4/users?username=a%00b", None, 400, {"error": "username is invalid"}),
    Case("GET", "/api/v4/users?search=a%00", None, 400, {"error": "search is invalid"}),
    Case("GET", "/api/v4/projects?search=%00", None, 400, {"error": "search is invalid"}),
    Case("GET", "/api/v4/groups?search=x%00", None, 400, {"error": "search is invalid"}),
    Case("GET", "/api/v4/projects/g%2Fp%00", None, 404, {"message": "404 Project Not Found"}),
    Case("GET", "/api/v4/groups/g%00", None, 404, {"message": "404 Group Not Found"}),
    Case("GET", "/api/v4/groups/g%00/subgroups", None, 404, {"message": "404 Group Not Found"}),
    Case(
        "POST",
        "/api/v4/groups",
        {"name": "ok", "path": "ok", "description": f"d{NUL}"},
        400,
        {"error": "description is invalid"},
    ),
    Case(
        "POST",
        "/api/v4/groups",
        {"name": "ok", "path": "ok", "description": f"d{SURROGATE}"},
        400,
        {"error": "description is invalid"},
    ),
    Case("POST", "/api/v4/groups", {"name": f"x{NUL}", "path": "x"}, 400, {"error": "name is invalid"}),
    Case("POST", "/api/v4/projects", {"name": f"n{SURROGATE}", "path": "n"}, 400, {"error": "name is invalid"}),
    Case(
        "POST",
        "/api/v4/groups/g/deploy_tokens",
        {"name": f"t{NUL}", "scopes": ["read_repository"]},
        400,
        {"message": "Name is invalid"},
    ),
    Case(
        "POST",
        "/api/v4/projects/g%2Fp/deploy_tokens",
        {"name": f"t{SURROGATE}", "scopes": ["read_repository"]},
        400,
        {"message": "Name is invalid"},
    ),
    Case("POST", PAT, {"name": f"t{NUL}", "scopes": ["api"]}, 400, {"error": "name is invalid"}),
    Case(
        "POST",
        "/api/v4/users",
        {"username": "u", "name": f"n{NUL}", "email": "u@x", "password": "p" * 12},
        400,
        {"error": "name is invalid"},
    ),
    # A NUL in an HTTP Basic username (git, the registry's token service): looked up, found nowhere.
    Case("GET", "/g/p.git/info/refs?service=git-upload-pack", None, 401, None, basic_user=f"a{NUL}b"),
    Case(
        "GET", "/jwt/auth?service=container_registry&scope=repository:g/p:pull", None, 401, None, basic_user=f"a{NUL}"
    ),
]


def headers(case: Case, root_token: str) -> dict[str, str]:
    """Root's token, or HTTP Basic as the case's user with a secret that is no token."""
    if case.basic_user is None:
        return {"PRIVATE-TOKEN": root_token, "Content-Type": "application/json"}
    return {"Authorization": "Basic " + base64.b64encode(f"{case.basic_user}:not-a-token".encode()).decode()}
