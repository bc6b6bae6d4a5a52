"""A static scan of the lab tests (tests/hosts) for checks that act: what `billkit verify` must never run.

A lab test not marked ``drill`` is read: its body, the fixtures it asks for and the helpers it reaches in the
test folders are searched for commands and calls that stop, kill, write or trip a limit. Code of the kit itself
(``billkit.*``) is not followed: its writing operations are named in ``KIT_WRITES``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from billkit.controls import ROOT

HOSTS = ROOT / "tests" / "hosts"

# In string literals (shell commands, SQL, CLI arguments); a list of strings is also read joined by spaces.
STRING_PATTERNS: dict[str, re.Pattern[str]] = {
    "starts, stops or restarts a unit": re.compile(
        r"\bsystemctl\s+(?:-\S+\s+)*(?:start|stop|restart|reload|try-restart|reload-or-restart|kill|enable|"
        r"disable|mask|unmask|isolate)\b"
    ),
    "kills a process": re.compile(r"(?:^|[\s;&|(`])(?:kill|pkill|killall)\s|\bSIG(?:KILL|TERM|STOP)\b"),
    "starts a process left running on a host": re.compile(r"\b(?:setsid|nohup)\b"),
    "writes a file on a host": re.compile(
        r"\btee\b|\b(?:cat|echo|printf)\b[^|;&]*\s>>?\s*(?!/dev/null)\S|\brm\s+-|\bmv\s|\bmkdir\b|\binstall\s+-d\b"
        r"|\bchmod\s|\bchown\s|\btouch\s|\bu?mount\s|\btruncate\s"
    ),
    "writes to a database": re.compile(
        r"\bINSERT\s+INTO\b|\bUPDATE\s+\S+\s+SET\b|\bDELETE\s+FROM\b|\bTRUNCATE\b|\bCHECKPOINT\b|\bCOPY\s+\S+\s+FROM\b"
        r"|\b(?:CREATE|DROP|ALTER)\s+(?:TABLE|SCHEMA|ROLE|USER|DATABASE|INDEX|VIEW|EXTENSION|SYSTEM)\b"
        r"|\b(?:GRANT|REVOKE)\s|\bpg_switch_wal\b|\bpg_terminate_backend\b"
    ),
    "runs a billkit command that acts": re.compile(
        # not advice in backquotes ("run `billkit up`"): a command line or an argument vector
        r"(?<![`\w])(?<!`\./)billkit\s+(?:(?:backup|restore-test|up|down|drill)\b|patch\b(?!\s+--check))"
    ),
}

# The kit's own operations that write (not followed into billkit.*): called by their name.
KIT_WRITES = {
    "take_backup": "takes a backup into the store",
    "take_snapshot": "stores a Vault snapshot",
    "restore_test": "restores a backup onto a scratch PostgreSQL",
    "pitr_drill": "drops a table and recovers it",
    "write_probe": "writes a row into the database",
    "wait_archived": "forces a WAL switch into the store",
    "deliver": "restarts app hosts with new secret IDs",
    "prepare": "issues certificates and role IDs when due",
    "issue_cert": "issues a certificate",
}
HTTP_WRITES = {"post", "put", "patch", "delete", "request"}
# boto3's and hvac's writing calls (delete_object, put_object_retention, create_or_update_secret, create_orphan…)
STORE_WRITE = re.compile(
    r"^(?:delete_\w+|put_\w+|update_\w+|restore_\w+|copy_object|create_(?:or_update_\w+|orphan|token|bucket))$"
)
FILE_WRITES = {"write", "write_text", "write_bytes"}
LOCAL_FILES = ("tmp_path", "EVIDENCE_DIR")  # the test's own scratch and the lab's evidence on the controller
LIMIT_STATUSES = {429: "expects a rate limit (429)", 423: "expects a lockout (423)"}


@dataclass(frozen=True)
class Finding:
    test: str  # tests/hosts/...py::name
    where: str  # the function, fixture or constant the match is in
    what: str
    text: str

    def line(self) -> str:
        return f"{self.test}: {self.what} (in {self.where}): {self.text[:120]}"


@dataclass
class Module:
    path: Path
    tree: ast.Module
    defs: dict[str, ast.FunctionDef] = field(default_factory=dict)
    consts: dict[str, ast.expr] = field(default_factory=dict)
    imports: dict[str, tuple[Path, str]] = field(default_factory=dict)  # local name -> (module file, name)

    @property
    def rel(self) -> str:
        return self.path.relative_to(ROOT).as_posix() if ROOT in self.path.parents else self.path.as_posix()


def _module_file(root: Path, base: Path, dotted: str) -> Path | None:
    if dotted == "conftest":  # <dir>/conftest.py, imported by its bare name
        for folder in (base, *base.parents):
            if (folder / "conftest.py").exists():
                return folder / "conftest.py"
            if folder == root:
                return None
    path = ROOT / Path(*dotted.split(".")).with_suffix(".py")
    return path if path.exists() and root in path.parents else None


def load(root: Path, path: Path) -> Module:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    mod = Module(path, tree)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            mod.defs[node.name] = node
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            mod.consts[node.targets[0].id] = node.value
        elif isinstance(node, ast.ImportFrom) and node.module:
            target = _module_file(root, path.parent, node.module)
            if target is not None:
                for alias in node.names:
                    mod.imports[alias.asname or alias.name] = (target, alias.name)
    return mod


class Index:
    """Every module of tests/hosts, parsed once."""

    def __init__(self, root: Path = HOSTS) -> None:
        self.root = root
        self.modules = {p: load(root, p) for p in sorted(root.rglob("*.py"))}

    def resolve(self, mod: Module, name: str) -> tuple[Module, ast.FunctionDef | ast.expr] | None:
        if name in mod.defs:
            return mod, mod.defs[name]
        if name in mod.consts:
            return mod, mod.consts[name]
        if name in mod.imports:
            path, real = mod.imports[name]
            other = self.modules.get(path)
            return self.resolve(other, real) if other else None
        return None

    def fixture(self, mod: Module, name: str) -> tuple[Module, ast.FunctionDef] | None:
        """A fixture by name: the test's module first, then the conftest files above it."""
        candidates = [mod.path] + [f / "conftest.py" for f in mod.path.parents if self.root in (f, *f.parents)]
        for path in candidates:
            other = self.modules.get(path)
            fn = other.defs.get(name) if other else None
            if other and fn and any(_is_fixture(d) for d in fn.decorator_list):
                return other, fn
        return None


def _is_fixture(node: ast.expr) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    return isinstance(target, ast.Attribute) and target.attr == "fixture"


def _mark_name(node: ast.expr) -> str | None:
    """``pytest.mark.X`` or ``pytest.mark.X(...)`` -> X."""
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Attribute) and target.value.attr == "mark":
        return target.attr
    return None


def marks_of(index: Index, mod: Module, nodes: list[ast.expr]) -> dict[str, list[ast.expr]]:
    """The marks a list of decorator or ``pytestmark`` expressions applies (module constants followed)."""
    out: dict[str, list[ast.expr]] = {}
    for node in nodes:
        if isinstance(node, ast.List | ast.Tuple):
            for name, found in marks_of(index, mod, list(node.elts)).items():
                out.setdefault(name, []).extend(found)
        elif isinstance(node, ast.Name) and (hit := index.resolve(mod, node.id)) and isinstance(hit[1], ast.expr):
            for name, found in marks_of(index, hit[0], [hit[1]]).items():
                out.setdefault(name, []).extend(found)
        elif name := _mark_name(node):
            out.setdefault(name, []).append(node)
    return out


def module_marks(index: Index, mod: Module) -> dict[str, list[ast.expr]]:
    value = mod.consts.get("pytestmark")
    return marks_of(index, mod, [value]) if value is not None else {}


def tests_of(mod: Module) -> Iterator[ast.FunctionDef]:
    yield from (fn for name, fn in mod.defs.items() if name.startswith("test_"))


def _without_docstring(fn: ast.FunctionDef) -> list[ast.stmt]:
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        return body[1:]
    return body


def _strings(nodes: list[ast.AST]) -> Iterator[tuple[str, str]]:
    """(text, excerpt) of every string literal; lists of strings also joined (an argument vector)."""
    for root in nodes:
        for node in ast.walk(root):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                yield node.value, node.value
            elif isinstance(node, ast.JoinedStr):
                text = ast.unparse(node)
                yield text, text
            elif isinstance(node, ast.List | ast.Tuple):
                parts = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                if len(parts) > 1:
                    yield " ".join(parts), " ".join(parts)


def _calls(nodes: list[ast.AST]) -> Iterator[tuple[str, ast.Call]]:
    for root in nodes:
        for node in ast.walk(root):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                if name:
                    yield name, node


def matches(nodes: list[ast.AST]) -> Iterator[tuple[str, str]]:
    """(what, excerpt) for every acting command or call in these nodes."""
    for text, excerpt in _strings(nodes):
        for what, pattern in STRING_PATTERNS.items():
            if pattern.search(text):
                yield what, excerpt
    for name, call in _calls(nodes):
        receiver = ast.unparse(call.func.value) if isinstance(call.func, ast.Attribute) else ""
        if name in KIT_WRITES:
            yield KIT_WRITES[name], ast.unparse(call)
        elif not receiver:
            continue
        elif name in HTTP_WRITES:
            yield "sends a request that may write", ast.unparse(call)
        elif name in FILE_WRITES:
            if not any(local in receiver for local in LOCAL_FILES):
                yield "writes a file", ast.unparse(call)
        elif STORE_WRITE.match(name):
            yield "changes an object in a store or in Vault", ast.unparse(call)
    for root in nodes:
        for node in ast.walk(root):
            if isinstance(node, ast.Constant) and type(node.value) is int and node.value in LIMIT_STATUSES:
                yield LIMIT_STATUSES[node.value], str(node.value)


def reach(index: Index, mod: Module, fn: ast.FunctionDef) -> Iterator[tuple[str, list[ast.AST]]]:
    """(where, nodes) of a test, the fixtures it asks for and the test folders' helpers and constants it uses."""
    seen: set[tuple[Path, str]] = set()
    todo: list[tuple[Module, str, ast.FunctionDef | ast.expr]] = [(mod, fn.name, fn)]
    while todo:
        m, name, node = todo.pop()
        if (m.path, name) in seen:
            continue
        seen.add((m.path, name))
        nodes: list[ast.AST] = list(_without_docstring(node)) if isinstance(node, ast.FunctionDef) else [node]
        yield f"{m.rel}::{name}", nodes
        if isinstance(node, ast.FunctionDef):
            for arg in node.args.args:
                if hit := index.fixture(m, arg.arg):
                    todo.append((hit[0], arg.arg, hit[1]))
        for root in nodes:
            for sub in ast.walk(root):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load) and (hit := index.resolve(m, sub.id)):
                    target = hit[0]
                    real = sub.id if sub.id in target.defs or sub.id in target.consts else m.imports[sub.id][1]
                    todo.append((target, real, hit[1]))


def read_tests(index: Index, ignore_drill: bool = False) -> Iterator[tuple[Module, ast.FunctionDef]]:
    """The lab tests `billkit verify` runs: marked lab, not marked drill (every lab test with ``ignore_drill``)."""
    for mod in index.modules.values():
        if not mod.path.name.startswith("test_"):
            continue
        mmarks = module_marks(index, mod)
        for fn in tests_of(mod):
            marks = {**mmarks, **marks_of(index, mod, fn.decorator_list)}
            if "lab" in marks and (ignore_drill or "drill" not in marks):
                yield mod, fn


def scan(index: Index | None = None, ignore_drill: bool = False) -> list[Finding]:
    index = index or Index()
    out: list[Finding] = []
    for mod, fn in read_tests(index, ignore_drill):
        test = f"{mod.rel}::{fn.name}"
        for where, nodes in reach(index, mod, fn):
            out += [Finding(test, where, what, text) for what, text in dict.fromkeys(matches(nodes))]
    return out


def drill_marks(index: Index | None = None) -> list[tuple[str, ast.expr]]:
    """(test, drill mark expression) for every drill-marked lab test."""
    index = index or Index()
    out: list[tuple[str, ast.expr]] = []
    for mod in index.modules.values():
        if not mod.path.name.startswith("test_"):
            continue
        mmarks = module_marks(index, mod)
        for fn in tests_of(mod):
            found = mmarks.get("drill", []) + marks_of(index, mod, fn.decorator_list).get("drill", [])
            out += [(f"{mod.rel}::{fn.name}", m) for m in found]
    return out
