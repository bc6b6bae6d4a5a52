"""CloudWatch Logs JSON filter patterns, evaluated offline against log lines (tests only).

The subset the kit's app alarms use: `{ <expr> }` with property selectors (`$.a.b`), `=` and `!=`
against quoted or bare strings (`*` matches any run of characters), `&&`, `||` and parentheses. A
line that is not a JSON object matches no JSON pattern. Anything outside the subset raises instead of
guessing: mixing `&&` and `||` without parentheses (precedence), a result that depends on `!=` against
a property the event lacks (the other terms are evaluated first: `false && unknown` is false), numeric or
existence tests.
"""

from __future__ import annotations

import json
import re
from typing import Any

_TOKEN = re.compile(r'\s*(\(|\)|&&|\|\||!=|=|"(?:[^"\\]|\\.)*"|\$[\w.\[\]]*|[^\s()&|=!"]+)')
_MISSING = object()


class UnsupportedPattern(ValueError):
    """The pattern uses syntax this evaluator does not model: the test must not guess its meaning."""


def _tokens(body: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(body):
        if body[pos:].strip() == "":
            break
        m = _TOKEN.match(body, pos)
        if m is None:
            raise UnsupportedPattern(f"cannot read the pattern at {body[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


def _select(event: Any, selector: str) -> Any:
    value = event
    for part in re.findall(r"\.(\w+)|\[(\d+)\]", selector[1:]):
        key, index = part
        if key and isinstance(value, dict) and key in value:
            value = value[key]
        elif index and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        else:
            return _MISSING
    return value


def _equal(value: Any, literal: str) -> bool:
    if not isinstance(value, str):
        raise UnsupportedPattern(f"comparing the non-string {value!r} with {literal!r} is not modelled")
    regex = ".*".join(re.escape(piece) for piece in literal.split("*"))
    return re.fullmatch(regex, value, re.DOTALL) is not None


class _Parser:
    def __init__(self, tokens: list[str], event: dict[str, Any]) -> None:
        self.tokens, self.event, self.pos = tokens, event, 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise UnsupportedPattern("the pattern ends too early")
        self.pos += 1
        return token

    def expr(self) -> bool | None:
        """True, False, or None when the result hangs on a comparison that is not modelled."""
        terms = [self.factor()]
        joiner: str | None = None
        while self.peek() in ("&&", "||"):
            op = self.take()
            if joiner is not None and op != joiner:
                raise UnsupportedPattern("&& and || mixed without parentheses: precedence is not modelled")
            joiner = op
            terms.append(self.factor())
        decisive = joiner != "&&"  # one True decides an ||, one False decides an &&
        if decisive in terms:
            return decisive
        return None if None in terms else not decisive

    def factor(self) -> bool | None:
        if self.peek() == "(":
            self.take()
            result = self.expr()
            if self.take() != ")":
                raise UnsupportedPattern("unbalanced parentheses")
            return result
        selector = self.take()
        if not selector.startswith("$"):
            raise UnsupportedPattern(f"expected a property selector, got {selector!r}")
        op = self.take()
        if op not in ("=", "!="):
            raise UnsupportedPattern(f"operator {op!r} is not modelled")
        raw = self.take()
        literal = json.loads(raw) if raw.startswith('"') else raw
        value = _select(self.event, selector)
        if value is _MISSING:
            return None if op == "!=" else False
        return _equal(value, literal) == (op == "=")


def matches(pattern: str, line: str) -> bool:
    """Whether CloudWatch Logs would count this log line for the JSON filter pattern."""
    text = pattern.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise UnsupportedPattern(f"not a JSON filter pattern: {pattern!r}")
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return False
    if not isinstance(event, dict):
        return False
    parser = _Parser(_tokens(text[1:-1]), event)
    result = parser.expr()
    if parser.peek() is not None:
        raise UnsupportedPattern(f"unexpected {parser.peek()!r} after the expression")
    if result is None:
        raise UnsupportedPattern(f"the result hangs on != against a property the event lacks: {line!r}")
    return result
