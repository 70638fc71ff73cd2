-- Lists search and order names by lower-case keys stored beside them (store/queries.py _matching, _text_key):
-- lowered by Python's str.lower when written, so that any script folds the same whatever the cluster's locale,
-- and read down these indexes rather than lowered row by row. COLLATE "C": ordered by code point, as Python
-- compares str.
ALTER TABLE users ADD COLUMN username_lower text COLLATE "C", ADD COLUMN name_lower text COLLATE "C",
    ADD COLUMN email_lower text COLLATE "C";
ALTER TABLE namespaces ADD COLUMN name_lower text COLLATE "C", ADD COLUMN path_lower text COLLATE "C";
ALTER TABLE projects ADD COLUMN name_lower text COLLATE "C", ADD COLUMN path_lower text COLLATE "C",
    ADD COLUMN description_lower text COLLATE "C";
-- Existing rows: lowered by the same str.lower, here (store/postgres.py _fill_search_keys). SQL's lower() would fold
-- as the database's locale does (ASCII only under "C") or as ICU does where the cluster has it, not always as Python.
-- python: fill_search_keys
ALTER TABLE users ALTER COLUMN username_lower SET NOT NULL, ALTER COLUMN name_lower SET NOT NULL,
    ALTER COLUMN email_lower SET NOT NULL;
ALTER TABLE namespaces ALTER COLUMN name_lower SET NOT NULL, ALTER COLUMN path_lower SET NOT NULL;
ALTER TABLE projects ALTER COLUMN name_lower SET NOT NULL, ALTER COLUMN path_lower SET NOT NULL,
    ALTER COLUMN description_lower SET NOT NULL;
-- Ordered lists (order_by=name, path, username) read their first page down these; an e-mail address is matched
-- whole (GitLab's User.search).
CREATE INDEX users_name_lower ON users (name_lower, id);
CREATE INDEX users_username_lower ON users (username_lower, id);
CREATE INDEX users_email_lower ON users (email_lower);
CREATE INDEX namespaces_name_lower ON namespaces (name_lower, id);
CREATE INDEX namespaces_path_lower ON namespaces (path_lower, id);
CREATE INDEX projects_name_lower ON projects (name_lower, id);
CREATE INDEX projects_path_lower ON projects (path_lower, id);
-- A search for a part of a name (3 characters or more, GitLab's Gitlab::SQL::Pattern) is a LIKE '%…%' that a
-- B-tree cannot serve: trigram indexes can (pg_trgm, as GitLab's own users and projects tables have). pg_trgm ships
-- with PostgreSQL and is a trusted extension (any database owner may create it); where it cannot be created,
-- searches still work and read the whole table.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm is not available (%): searches will read whole tables', SQLERRM;
END $$;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX users_name_trgm ON users USING gin (name_lower gin_trgm_ops);
        CREATE INDEX users_username_trgm ON users USING gin (username_lower gin_trgm_ops);
        CREATE INDEX namespaces_name_trgm ON namespaces USING gin (name_lower gin_trgm_ops);
        CREATE INDEX namespaces_path_trgm ON namespaces USING gin (path_lower gin_trgm_ops);
        CREATE INDEX projects_name_trgm ON projects USING gin (name_lower gin_trgm_ops);
        CREATE INDEX projects_path_trgm ON projects USING gin (path_lower gin_trgm_ops);
        CREATE INDEX projects_description_trgm ON projects USING gin (description_lower gin_trgm_ops);
    END IF;
END $$;
