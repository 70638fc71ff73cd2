-- Web UI sessions, server-side so that every replica sees them and logout or a blocked user ends them at once.
-- Only the SHA-256 digest of the session id is stored: a copy of the database does not let anyone sign in.
-- Same meaning as sqlite/0003.
CREATE TABLE web_sessions (
    session_digest  bytea PRIMARY KEY,    -- SHA-256 of the cookie's session id
    user_id         bigint NOT NULL REFERENCES users(id),
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL  -- absolute end of the session (web/sessions.py: TTL)
);
CREATE INDEX web_sessions_expires ON web_sessions (expires_at);
CREATE INDEX web_sessions_user ON web_sessions (user_id);
