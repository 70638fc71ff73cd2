"""The server-rendered web UI: sign-in, the landing page and Settings → Repository → Deploy tokens of projects and
groups. Handlers live in auth.py, home.py and deploy_tokens.py; routes.py lists their URLs ("web." routes)."""
