"""Form input checked on the server and refused on the form itself, field by field."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class FormErrors(dict[str, str]):
    """Field name -> what is wrong with it and how to fix it (shown next to the field)."""

    def parse(self, name: str, parse: Callable[..., T], *args: Any) -> T | None:
        """``parse(*args)``, or None with the ValueError's message recorded against ``name``."""
        try:
            return parse(*args)
        except ValueError as exc:
            self[name] = str(exc)
            return None

    def model(self, model: type[M], hints: Mapping[str, str], **values: Any) -> M | None:
        """The validated model, or None with one readable message per invalid field."""
        try:
            return model(**values)
        except ValidationError as exc:
            for e in exc.errors():
                loc = [p for p in e.get("loc", ()) if not isinstance(p, int)]
                name = str(loc[-1]) if loc else "form"
                # the hint says what the field takes; pydantic's message is the fallback (never the input)
                self.setdefault(name, hints.get(name, e.get("msg", "invalid value")))
            return None
