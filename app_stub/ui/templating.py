"""The UI's templates and the one way pages are rendered (with the session's CSRF token)."""

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

templates = Jinja2Templates(directory=str(Path(__file__).parent.parent / "templates"))


def page(request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    sess = getattr(request.state, "session", None)
    ctx.setdefault("csrf", sess.csrf if sess else "")
    ctx.setdefault("status", status_code)
    return templates.TemplateResponse(request, name, ctx, status_code=status_code)
