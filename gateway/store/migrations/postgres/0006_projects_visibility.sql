-- GET /projects narrows its candidates to the public and internal projects plus the caller's own (api/projects.py
-- _candidates): found through this index, not by reading every project of the instance.
CREATE INDEX projects_visibility ON projects (visibility);
