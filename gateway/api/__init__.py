"""GitLab REST API v4 subset: deploy tokens, projects, groups, users and members in GitLab's shapes."""
