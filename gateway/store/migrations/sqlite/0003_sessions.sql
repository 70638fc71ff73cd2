-- Web UI sessions, server-side so that every replica sees them and logout or a blocked user ends them at once.
-- Only the SHA-256 digest of the session id is stored: a copy of the database does not let anyone sign in.
CREATE TABLE web_sessions (
    session_digest  BLOB PRIMARY KEY,      -- SHA-256 of the cookie's session id
    user_id         INTEGER NOT NULL REFERENCES users(id),
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL          -- absolute end of the session (web/sessions.py: TTL)
);
CREATE INDEX web_sessions_expires ON web_sessions (expires_at);
CREATE INDEX web_sessions_user ON web_sessions (user_id);
