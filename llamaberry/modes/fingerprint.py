"""A mode's prompt version: a short fingerprint of everything that decides what its calls are
told, computed from the texts themselves, so no one has to remember to bump a number.

It hashes the literal values (strings and numbers; docstrings and comments left out) of:
- the definitions in `prompts.py` the mode's module names (`prompts.X`), and every definition
  of `prompts.py` those name in turn (refine's `later_turn_messages` reaches `LATER_TURN`,
  `_after_turns`, `REFINE_SYSTEM`...); a module that hands `prompts` on as a whole, or
  imports all of it, takes every definition;
- every literal of the mode's own module: the lines it sends itself (steps' retry reasons,
  reflect's closing "why"), its options' defaults and bounds, and, to err on the safe side,
  its other strings too (a reworded error line there makes a new version).
A change to one mode's prompts thus changes that mode's version and no other's: an eval
reruns refine after refine's prompts changed and still reuses its single runs.

The literals are read from the parsed source (`ast`), whose constants do not depend on the
Python version, the hash seed or the formatting; a module whose source is not installed
falls back to its module-level strings.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
from collections.abc import Iterator, Sequence
from types import ModuleType

# The name a mode module gives `llamaberry.modes.prompts`.
_PROMPTS = "prompts"


def fingerprint(prompts_source: str, mode_source: str) -> str:
    """The prompt version of a mode whose module is `mode_source`, with `prompts_source` as
    `prompts.py`: the first 12 hex digits of the sha256 of the texts both decide."""
    definitions = _definitions(prompts_source)
    mode_tree = ast.parse(mode_source)
    reached = _reached(definitions, mode_tree)
    texts = [[name, _literals(definitions[name])] for name in sorted(reached)]
    blob = json.dumps([texts, _literals([mode_tree])], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def prompt_names(prompts_source: str, mode_source: str) -> set[str]:
    """The top-level names of `prompts.py` whose texts count for the mode in `mode_source`."""
    definitions = _definitions(prompts_source)
    return _reached(definitions, ast.parse(mode_source))


def _reached(definitions: dict[str, list[ast.stmt]], mode_tree: ast.Module) -> set[str]:
    return _closure(_names_used(mode_tree, set(definitions)), definitions)


def module_fingerprint(prompts: ModuleType, mode: ModuleType) -> str:
    """`fingerprint` of the installed modules' sources (their module-level strings when a
    source is not installed, as in a build without .py files)."""
    try:
        return fingerprint(inspect.getsource(prompts), inspect.getsource(mode))
    except (OSError, TypeError):
        texts = [_strings(prompts), _strings(mode)]
        blob = json.dumps(texts, ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _strings(module: ModuleType) -> dict[str, str]:
    return {k: v for k, v in vars(module).items() if isinstance(v, str) and not k.startswith("__")}


@functools.lru_cache(maxsize=4)
def _definitions(source: str) -> dict[str, list[ast.stmt]]:
    """Each top-level name of `prompts.py` and the statements that define it (parsed once
    for every mode)."""
    found: dict[str, list[ast.stmt]] = {}
    for statement in ast.parse(source).body:
        for name in _defined(statement):
            found.setdefault(name, []).append(statement)
    return found


def _defined(statement: ast.stmt) -> Iterator[str]:
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        yield statement.name
    elif isinstance(statement, ast.Assign):
        for target in statement.targets:
            yield from (n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    elif isinstance(statement, ast.AnnAssign | ast.AugAssign) and isinstance(
        statement.target, ast.Name
    ):
        yield statement.target.id


def _names_used(tree: ast.Module, known: set[str]) -> set[str]:
    """The names of `prompts.py` a mode's module uses: `prompts.X`, or names imported from it;
    all of them when it uses the module otherwise (passes `prompts` itself on, star-imports)."""
    used: set[str] = set()
    aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.endswith(f"modes.{_PROMPTS}") or module == _PROMPTS:
                if any(alias.name == "*" for alias in node.names):
                    return known
                used.update(alias.name for alias in node.names)
            elif module.endswith("modes") or (node.level and not module):
                aliases.update(a.asname or a.name for a in node.names if a.name == _PROMPTS)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.endswith(f"modes.{_PROMPTS}"):
                    if alias.asname is None:
                        return known  # read as llamaberry.modes.prompts.X: take it all
                    aliases.add(alias.asname)
    attributes: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            used.add(node.attr)
            attributes.add(id(node.value))
    bare = any(
        isinstance(node, ast.Name) and node.id in aliases and id(node) not in attributes
        for node in ast.walk(tree)
    )
    return known if bare else used & known


def _closure(names: set[str], definitions: dict[str, list[ast.stmt]]) -> set[str]:
    """`names` and every top-level name their definitions use, and so on."""
    seen: set[str] = set()
    todo = [name for name in names if name in definitions]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for statement in definitions[name]:
            for node in ast.walk(statement):
                if isinstance(node, ast.Name) and node.id in definitions and node.id not in seen:
                    todo.append(node.id)
    return seen


def _literals(nodes: Sequence[ast.AST]) -> list[str]:
    """Every literal value in `nodes`, in the order of the source, docstrings left out."""
    out: list[str] = []
    for node in nodes:
        _collect(node, out)
    return out


def _collect(node: ast.AST, out: list[str]) -> None:
    if isinstance(node, ast.Constant):
        out.append(repr(node.value))
        return
    children = list(ast.iter_child_nodes(node))
    if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        body = node.body
        if body and _is_docstring(body[0]):
            children = [child for child in children if child is not body[0]]
    for child in children:
        _collect(child, out)


def _is_docstring(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )
