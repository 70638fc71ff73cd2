-- GET /users?order_by=created_at (and keyset pagination's next page by it) reads down this index from the cursor,
-- rather than sorting every user of the instance (store/queries.py list_users, _past).
CREATE INDEX users_created ON users (created_at, id);
-- The trigram indexes (migration 0008) take each new row in at once (fastupdate off), not into GIN's pending list:
-- that list is read whole by every search until a vacuum merges it, and after a bulk load (100,000 users) it made a
-- search read ~1,500 pages (7.7 ms, not 0.2). Names are written rarely; a search is read on every keystroke of a
-- filter. What is pending now is merged here.
DO $$
DECLARE
    trigram_index TEXT;
BEGIN
    FOREACH trigram_index IN ARRAY ARRAY['users_name_trgm', 'users_username_trgm', 'namespaces_name_trgm',
            'namespaces_path_trgm', 'projects_name_trgm', 'projects_path_trgm', 'projects_description_trgm'] LOOP
        IF to_regclass(trigram_index) IS NOT NULL THEN
            EXECUTE format('ALTER INDEX %I SET (fastupdate = off)', trigram_index);
            PERFORM gin_clean_pending_list(to_regclass(trigram_index));
        END IF;
    END LOOP;
END $$;
