-- Audit trail (gateway/audit.py) and tokens' last use (gateway/last_use.py).
-- Events outlive what they describe (a deleted token, a removed user): no foreign keys.
CREATE TABLE audit_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at   timestamptz NOT NULL,
    author_id    bigint NOT NULL,          -- a user id; -1 unauthenticated, -2 a deploy token (GitLab's pseudo-authors)
    entity_type  text NOT NULL,            -- Project, Group, User, Gitlab::Audit::InstanceScope
    entity_id    bigint NOT NULL,
    event_name   text NOT NULL,
    details      jsonb NOT NULL
);
CREATE INDEX audit_events_entity ON audit_events (entity_type, entity_id, id);
CREATE INDEX audit_events_created ON audit_events (created_at);

-- Client addresses, newest first; written at most once a minute per token.
ALTER TABLE deploy_tokens ADD COLUMN last_used_at timestamptz;
ALTER TABLE deploy_tokens ADD COLUMN last_used_ips text[] NOT NULL DEFAULT '{}';
ALTER TABLE personal_access_tokens ADD COLUMN last_used_ips text[] NOT NULL DEFAULT '{}';
