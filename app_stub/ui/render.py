"""Rendering staff pages: the one Jinja2 environment (its money filter and navigation) and the error page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.routing import Match

from app_stub.ui import format as fmt
from app_stub.ui import nav

templates = Jinja2Templates(directory=str(Path(__file__).parent.parent / "templates"))
templates.env.filters["money"] = fmt.money
templates.env.globals["nav_for"] = nav.links


def render(request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    """A page, with the session's CSRF token and (once fully signed in) the staff member and their nav."""
    sess = getattr(request.state, "session", None)
    ctx.setdefault("csrf", sess.csrf if sess else "")
    ctx.setdefault("staff", getattr(request.state, "staff", None))
    ctx.setdefault("status", status_code)
    ctx.setdefault("errors", {})
    ctx.setdefault("values", {})
    return templates.TemplateResponse(request, name, ctx, status_code=status_code)


# status -> (title, what to do)
_ADVICE: dict[int, tuple[str, str]] = {
    400: ("The request was refused", "Check the values you entered, then try again."),
    401: ("Authentication needed", "Log in again (or enter a current code), then repeat the action."),
    403: ("Not allowed", "Your roles do not allow this action. If your work needs it, ask an administrator."),
    404: ("Not found", "The record does not exist or the link is wrong: go back and pick it from the list."),
    409: ("Conflict with the current state", "Reload the record, check its current state, then try again."),
    410: ("No longer available", "This record was erased; its data cannot be shown any more."),
    422: ("Invalid input", "Correct the values listed below, then send the form again."),
    423: ("Account locked", "Wait for the lockout to end or ask an administrator to help."),
    503: ("Service unavailable", "Try again in a minute; if it persists, tell the operators."),
}
_UNKNOWN = ("Something went wrong", "Go back and try again; if it persists, tell the operators.")


def error_page(request: Request, status: int, message: str, problems: list[str] | None = None) -> HTMLResponse:
    title, advice = _ADVICE.get(status, _UNKNOWN)
    if status == 403 and "CSRF" in message:
        advice = "The form was stale: go back, reload the page and send it again."
    return render(
        request,
        "error.html",
        status,
        title=title,
        message=message,
        advice=advice,
        problems=problems or [],
        back=back_link(request),
    )


def back_link(request: Request) -> str:
    """The nearest page to return to: the form a POST came from, else the closest parent page that exists."""
    parts = request.url.path.rstrip("/").split("/")
    # a GET that failed should not link to itself; a POST's own path is often its form's page
    last = len(parts) if request.method != "GET" else len(parts) - 1
    for n in range(last, 0, -1):
        candidate = "/".join(parts[:n]) or "/"
        if candidate.startswith("/api"):
            break
        scope = {"type": "http", "path": candidate, "method": "GET"}
        for route in request.app.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return candidate
    return "/"
