-- Package names and the projects that own them, per format (docs/packages.md). With a flat backend (one registry
-- for every project) only the owner of a name may read or write it; with per-project backends a name may belong
-- to several projects and the table serves group-level endpoints and listings. Same meaning as sqlite/0002.
CREATE TABLE package_names (
    format      text NOT NULL CHECK (format IN ('pypi', 'npm', 'maven', 'generic')),
    name        text NOT NULL,            -- normalised: PEP 503 for PyPI, groupId/artifactId path for Maven
    project_id  bigint NOT NULL REFERENCES projects(id),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,     -- last upload through the gateway
    PRIMARY KEY (format, name, project_id)
);
CREATE INDEX package_names_project ON package_names (project_id, format);
