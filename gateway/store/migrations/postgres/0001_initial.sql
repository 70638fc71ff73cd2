-- Initial schema (PostgreSQL); same tables and meaning as migrations/sqlite/0001_initial.sql.
-- Timestamps are timestamptz, digests bytea, ids `bigint generated always as identity`: a sequence never hands
-- out an id twice, even after a delete or a rolled-back insert (the default deploy token username
-- gitlab+deploy-token-{id} and refresh tokens rely on that).
-- `routes` holds every group, personal namespace and project path once: GitLab's rule that a path is unique
-- across namespaces and projects, case-insensitively (app/models/route.rb).

CREATE TABLE routes (
    path_lower   text PRIMARY KEY,
    source_kind  text NOT NULL CHECK (source_kind IN ('namespace', 'project')),
    source_id    bigint NOT NULL
);

CREATE TABLE namespaces (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('group', 'user')),
    name          text NOT NULL,
    path          text NOT NULL,
    full_path     text NOT NULL,
    parent_id     bigint REFERENCES namespaces(id),
    traversal_ids bigint[] NOT NULL DEFAULT '{}',  -- ids from the root to this namespace (GitLab's traversal_ids)
    visibility    text NOT NULL CHECK (visibility IN ('private', 'internal', 'public')),
    description   text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL,
    owner_id      bigint
);
CREATE UNIQUE INDEX namespaces_full_path ON namespaces (lower(full_path));
CREATE INDEX namespaces_parent ON namespaces (parent_id);

CREATE TABLE users (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username       text NOT NULL,
    name           text NOT NULL,
    email          text NOT NULL,
    password_hash  text,
    is_admin       boolean NOT NULL DEFAULT false,
    state          text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'blocked')),
    created_at     timestamptz NOT NULL,
    namespace_id   bigint NOT NULL REFERENCES namespaces(id)
);
CREATE UNIQUE INDEX users_username ON users (lower(username));

CREATE TABLE projects (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace_id  bigint NOT NULL REFERENCES namespaces(id),
    name          text NOT NULL,
    path          text NOT NULL,
    full_path     text NOT NULL,
    visibility    text NOT NULL CHECK (visibility IN ('private', 'internal', 'public')),
    description   text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL,
    creator_id    bigint REFERENCES users(id)
);
CREATE UNIQUE INDEX projects_full_path ON projects (lower(full_path));
CREATE INDEX projects_namespace ON projects (namespace_id);

CREATE TABLE members (
    source_kind   text NOT NULL CHECK (source_kind IN ('project', 'namespace')),
    source_id     bigint NOT NULL,
    user_id       bigint NOT NULL REFERENCES users(id),
    access_level  integer NOT NULL CHECK (access_level IN (10, 20, 30, 40, 50)),
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (user_id, source_kind, source_id)
);
CREATE INDEX members_source ON members (source_kind, source_id);

CREATE TABLE personal_access_tokens (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users(id),
    name          text NOT NULL,
    token_digest  bytea NOT NULL UNIQUE,   -- SHA-256 of the secret; the secret itself is never stored
    scopes        text[] NOT NULL,
    expires_at    timestamptz,
    revoked       boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL,
    last_used_at  timestamptz
);
CREATE INDEX personal_access_tokens_user ON personal_access_tokens (user_id);

-- One instance-wide id sequence: the id appears in the default username gitlab+deploy-token-{id}.
CREATE TABLE deploy_tokens (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL,
    username         text,                  -- NULL: the default gitlab+deploy-token-{id}
    token_digest     bytea NOT NULL UNIQUE, -- SHA-256 of the secret
    token_encrypted  bytea,                 -- AES-GCM copy, only for gitlab-deploy-token (CI variables)
    scopes           text[] NOT NULL,       -- in GitLab's order
    expires_at       timestamptz,           -- NULL: never
    revoked          boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL,
    creator_id       bigint REFERENCES users(id),
    project_id       bigint REFERENCES projects(id),
    group_id         bigint REFERENCES namespaces(id),
    CHECK ((project_id IS NULL) <> (group_id IS NULL))
);
CREATE INDEX deploy_tokens_project ON deploy_tokens (project_id) WHERE project_id IS NOT NULL;
CREATE INDEX deploy_tokens_group ON deploy_tokens (group_id) WHERE group_id IS NOT NULL;
