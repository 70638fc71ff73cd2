"""Deploy Token Gateway: GitLab-style deploy tokens in front of git, registry and package backends."""

__version__ = "0.1.0"
