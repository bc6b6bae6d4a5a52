"""The staff web UI: server-rendered pages (Jinja2), their formatting helpers and routers."""
