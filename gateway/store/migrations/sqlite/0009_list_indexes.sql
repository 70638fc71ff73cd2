-- GET /users?order_by=created_at (and keyset pagination's next page by it) reads down this index from the cursor,
-- rather than sorting every user of the instance (store/queries.py list_users, _past).
CREATE INDEX users_created ON users (created_at, id);
-- Searches of 3 characters or more look a part of a name up in FTS5 trigram indexes of the lower-case keys (SQLite
-- 3.34+; store/sqlite.py _contains_any), where they read every row (17-39 ms at 100,000 users): PostgreSQL has
-- pg_trgm for this (migration 0008). External content: the index holds the trigrams only, the text stays in its
-- table, and these triggers keep the two in step. case_sensitive 1: the keys are lowered by Python already, and a
-- phrase of the lowered term then matches exactly the keys that hold it.
CREATE VIRTUAL TABLE users_search USING fts5(
    username_lower, name_lower, content='users', content_rowid='id', tokenize='trigram case_sensitive 1'
);
CREATE TRIGGER users_search_insert AFTER INSERT ON users BEGIN
    INSERT INTO users_search (rowid, username_lower, name_lower) VALUES (NEW.id, NEW.username_lower, NEW.name_lower);
END;
CREATE TRIGGER users_search_delete AFTER DELETE ON users BEGIN
    INSERT INTO users_search (users_search, rowid, username_lower, name_lower)
    VALUES ('delete', OLD.id, OLD.username_lower, OLD.name_lower);
END;
CREATE TRIGGER users_search_update AFTER UPDATE OF username_lower, name_lower ON users BEGIN
    INSERT INTO users_search (users_search, rowid, username_lower, name_lower)
    VALUES ('delete', OLD.id, OLD.username_lower, OLD.name_lower);
    INSERT INTO users_search (rowid, username_lower, name_lower) VALUES (NEW.id, NEW.username_lower, NEW.name_lower);
END;
INSERT INTO users_search (users_search) VALUES ('rebuild');

CREATE VIRTUAL TABLE namespaces_search USING fts5(
    name_lower, path_lower, content='namespaces', content_rowid='id', tokenize='trigram case_sensitive 1'
);
CREATE TRIGGER namespaces_search_insert AFTER INSERT ON namespaces BEGIN
    INSERT INTO namespaces_search (rowid, name_lower, path_lower) VALUES (NEW.id, NEW.name_lower, NEW.path_lower);
END;
CREATE TRIGGER namespaces_search_delete AFTER DELETE ON namespaces BEGIN
    INSERT INTO namespaces_search (namespaces_search, rowid, name_lower, path_lower)
    VALUES ('delete', OLD.id, OLD.name_lower, OLD.path_lower);
END;
CREATE TRIGGER namespaces_search_update AFTER UPDATE OF name_lower, path_lower ON namespaces BEGIN
    INSERT INTO namespaces_search (namespaces_search, rowid, name_lower, path_lower)
    VALUES ('delete', OLD.id, OLD.name_lower, OLD.path_lower);
    INSERT INTO namespaces_search (rowid, name_lower, path_lower) VALUES (NEW.id, NEW.name_lower, NEW.path_lower);
END;
INSERT INTO namespaces_search (namespaces_search) VALUES ('rebuild');

CREATE VIRTUAL TABLE projects_search USING fts5(
    name_lower, path_lower, description_lower, content='projects', content_rowid='id',
    tokenize='trigram case_sensitive 1'
);
CREATE TRIGGER projects_search_insert AFTER INSERT ON projects BEGIN
    INSERT INTO projects_search (rowid, name_lower, path_lower, description_lower)
    VALUES (NEW.id, NEW.name_lower, NEW.path_lower, NEW.description_lower);
END;
CREATE TRIGGER projects_search_delete AFTER DELETE ON projects BEGIN
    INSERT INTO projects_search (projects_search, rowid, name_lower, path_lower, description_lower)
    VALUES ('delete', OLD.id, OLD.name_lower, OLD.path_lower, OLD.description_lower);
END;
CREATE TRIGGER projects_search_update AFTER UPDATE OF name_lower, path_lower, description_lower ON projects BEGIN
    INSERT INTO projects_search (projects_search, rowid, name_lower, path_lower, description_lower)
    VALUES ('delete', OLD.id, OLD.name_lower, OLD.path_lower, OLD.description_lower);
    INSERT INTO projects_search (rowid, name_lower, path_lower, description_lower)
    VALUES (NEW.id, NEW.name_lower, NEW.path_lower, NEW.description_lower);
END;
INSERT INTO projects_search (projects_search) VALUES ('rebuild');
