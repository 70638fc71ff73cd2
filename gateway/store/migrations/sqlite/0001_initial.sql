-- Initial schema. Timestamps are UTC text 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (fixed width, so text order = time order).
-- `routes` holds every group, personal namespace and project path once: GitLab's rule that a path is unique
-- across namespaces and projects, case-insensitively (app/models/route.rb).

CREATE TABLE routes (
    path_lower   TEXT PRIMARY KEY,
    source_kind  TEXT NOT NULL CHECK (source_kind IN ('namespace', 'project')),
    source_id    INTEGER NOT NULL
);

CREATE TABLE namespaces (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL CHECK (kind IN ('group', 'user')),
    name          TEXT NOT NULL,
    path          TEXT NOT NULL,
    full_path     TEXT NOT NULL,
    parent_id     INTEGER REFERENCES namespaces(id),
    traversal_ids TEXT NOT NULL,           -- '/'-joined ids from the root to this namespace
    visibility    TEXT NOT NULL CHECK (visibility IN ('private', 'internal', 'public')),
    description   TEXT NOT NULL DEFAULT '',
    created_at    TEXT NOT NULL,
    owner_id      INTEGER
);
CREATE UNIQUE INDEX namespaces_full_path ON namespaces (lower(full_path));
CREATE INDEX namespaces_parent ON namespaces (parent_id);

CREATE TABLE users (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    username       TEXT NOT NULL,
    name           TEXT NOT NULL,
    email          TEXT NOT NULL,
    password_hash  TEXT,
    is_admin       INTEGER NOT NULL DEFAULT 0,
    state          TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'blocked')),
    created_at     TEXT NOT NULL,
    namespace_id   INTEGER NOT NULL REFERENCES namespaces(id)
);
CREATE UNIQUE INDEX users_username ON users (lower(username));

CREATE TABLE projects (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace_id  INTEGER NOT NULL REFERENCES namespaces(id),
    name          TEXT NOT NULL,
    path          TEXT NOT NULL,
    full_path     TEXT NOT NULL,
    visibility    TEXT NOT NULL CHECK (visibility IN ('private', 'internal', 'public')),
    description   TEXT NOT NULL DEFAULT '',
    created_at    TEXT NOT NULL,
    creator_id    INTEGER REFERENCES users(id)
);
CREATE UNIQUE INDEX projects_full_path ON projects (lower(full_path));
CREATE INDEX projects_namespace ON projects (namespace_id);

CREATE TABLE members (
    source_kind   TEXT NOT NULL CHECK (source_kind IN ('project', 'namespace')),
    source_id     INTEGER NOT NULL,
    user_id       INTEGER NOT NULL REFERENCES users(id),
    access_level  INTEGER NOT NULL CHECK (access_level IN (10, 20, 30, 40, 50)),
    created_at    TEXT NOT NULL,
    PRIMARY KEY (user_id, source_kind, source_id)
);
CREATE INDEX members_source ON members (source_kind, source_id);

CREATE TABLE personal_access_tokens (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       INTEGER NOT NULL REFERENCES users(id),
    name          TEXT NOT NULL,
    token_digest  BLOB NOT NULL UNIQUE,    -- SHA-256 of the secret; the secret itself is never stored
    scopes        TEXT NOT NULL,           -- space-separated
    expires_at    TEXT,
    revoked       INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    last_used_at  TEXT
);
CREATE INDEX personal_access_tokens_user ON personal_access_tokens (user_id);

-- One instance-wide id sequence: the id appears in the default username gitlab+deploy-token-{id}.
CREATE TABLE deploy_tokens (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT NOT NULL,
    username         TEXT,                 -- NULL: the default gitlab+deploy-token-{id}
    token_digest     BLOB NOT NULL UNIQUE, -- SHA-256 of the secret
    token_encrypted  BLOB,                 -- AES-GCM copy, only for gitlab-deploy-token (CI variables)
    scopes           TEXT NOT NULL,        -- space-separated, in GitLab's order
    expires_at       TEXT,                 -- NULL: never
    revoked          INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    creator_id       INTEGER REFERENCES users(id),
    project_id       INTEGER REFERENCES projects(id),
    group_id         INTEGER REFERENCES namespaces(id),
    CHECK ((project_id IS NULL) <> (group_id IS NULL))
);
CREATE INDEX deploy_tokens_project ON deploy_tokens (project_id) WHERE project_id IS NOT NULL;
CREATE INDEX deploy_tokens_group ON deploy_tokens (group_id) WHERE group_id IS NOT NULL;
