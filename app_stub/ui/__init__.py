"""The staff web UI: server-rendered pages (Jinja2) with forms and CSRF tokens, one router per area."""
