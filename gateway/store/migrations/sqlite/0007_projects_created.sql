-- GET /projects is ordered by created_at (then id) unless asked otherwise: its first page is read down this index,
-- not sorted out of every project of the instance (store/queries.py page_projects).
CREATE INDEX projects_created ON projects (created_at, id);
