-- Lists search and order names by lower-case keys stored beside them (store/queries.py _matching, _text_key):
-- lowered by Python's str.lower when written, so that any script folds the same in both databases, and read
-- down these indexes rather than lowered row by row (a Python function per row: 120 ms at 100,000 users).
ALTER TABLE users ADD COLUMN username_lower TEXT;
ALTER TABLE users ADD COLUMN name_lower TEXT;
ALTER TABLE users ADD COLUMN email_lower TEXT;
ALTER TABLE namespaces ADD COLUMN name_lower TEXT;
ALTER TABLE namespaces ADD COLUMN path_lower TEXT;
ALTER TABLE projects ADD COLUMN name_lower TEXT;
ALTER TABLE projects ADD COLUMN path_lower TEXT;
ALTER TABLE projects ADD COLUMN description_lower TEXT;
UPDATE users SET username_lower = unicode_lower(username), name_lower = unicode_lower(name),
    email_lower = unicode_lower(email);
UPDATE namespaces SET name_lower = unicode_lower(name), path_lower = unicode_lower(path);
UPDATE projects SET name_lower = unicode_lower(name), path_lower = unicode_lower(path),
    description_lower = unicode_lower(description);
-- SQLite cannot add a NOT NULL column without a default: a row written without its keys is refused here instead,
-- as PostgreSQL's NOT NULL refuses it (it would never be found by a search).
CREATE TRIGGER users_keys BEFORE INSERT ON users
WHEN NEW.username_lower IS NULL OR NEW.name_lower IS NULL OR NEW.email_lower IS NULL
BEGIN SELECT RAISE(ABORT, 'users: lower-case keys are required'); END;
CREATE TRIGGER namespaces_keys BEFORE INSERT ON namespaces
WHEN NEW.name_lower IS NULL OR NEW.path_lower IS NULL
BEGIN SELECT RAISE(ABORT, 'namespaces: lower-case keys are required'); END;
CREATE TRIGGER projects_keys BEFORE INSERT ON projects
WHEN NEW.name_lower IS NULL OR NEW.path_lower IS NULL OR NEW.description_lower IS NULL
BEGIN SELECT RAISE(ABORT, 'projects: lower-case keys are required'); END;
-- Ordered lists (order_by=name, path, username) read their first page down these; an e-mail address is matched
-- whole (GitLab's User.search).
CREATE INDEX users_name_lower ON users (name_lower, id);
CREATE INDEX users_username_lower ON users (username_lower, id);
CREATE INDEX users_email_lower ON users (email_lower);
CREATE INDEX namespaces_name_lower ON namespaces (name_lower, id);
CREATE INDEX namespaces_path_lower ON namespaces (path_lower, id);
CREATE INDEX projects_name_lower ON projects (name_lower, id);
CREATE INDEX projects_path_lower ON projects (path_lower, id);
