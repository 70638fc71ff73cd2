-- Audit trail (gateway/audit.py) and tokens' last use (gateway/last_use.py).
-- Events outlive what they describe (a deleted token, a removed user): no foreign keys. `details` is JSON text.
CREATE TABLE audit_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at   TEXT NOT NULL,
    author_id    INTEGER NOT NULL,         -- a user id; -1 unauthenticated, -2 a deploy token (GitLab's pseudo-authors)
    entity_type  TEXT NOT NULL,            -- Project, Group, User, Gitlab::Audit::InstanceScope
    entity_id    INTEGER NOT NULL,
    event_name   TEXT NOT NULL,
    details      TEXT NOT NULL
);
CREATE INDEX audit_events_entity ON audit_events (entity_type, entity_id, id);
CREATE INDEX audit_events_created ON audit_events (created_at);

-- Space-separated client addresses, newest first; written at most once a minute per token.
ALTER TABLE deploy_tokens ADD COLUMN last_used_at TEXT;
ALTER TABLE deploy_tokens ADD COLUMN last_used_ips TEXT NOT NULL DEFAULT '';
ALTER TABLE personal_access_tokens ADD COLUMN last_used_ips TEXT NOT NULL DEFAULT '';
