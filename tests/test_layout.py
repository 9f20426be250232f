"""The folder tree shows the pipeline (issue 25), checked statically from the source with ``ast``: no import
cycle, at most three flat modules, no module over 450 lines of code, no function over 100 lines, every
subpackage ``__init__.py`` a docstring only, and each stage's dvc.yaml deps exactly the files it can import.

The import graph counts what can run: top-level and function-level imports (not those under
``if TYPE_CHECKING:``), ``from dnnprobe.x import y`` where ``y`` is a module, importing a module's
packages' ``__init__.py``, and the by-name imports of the model-source registry (the module paths in
``network/registry.py`` ``SOURCES``) and of ``cli.py`` (``COMMANDS``). tests/pipeline checks the
same deps against what a real `dvc repro` imports.
"""

from __future__ import annotations

import ast
import io
import tokenize
from functools import cache
from pathlib import Path

import yaml

from helpers import REPO

SRC = REPO / "src"
PACKAGE = SRC / "dnnprobe"
FLAT_ALLOWED = {"__init__.py", "__main__.py", "cli.py"}
MAX_CODE_LINES = 450
MAX_FUNCTION_LINES = 100
# Modules that import others by name, from a dict of module paths: (module, the dict's name).
BY_NAME = {"dnnprobe.network.registry": "SOURCES", "dnnprobe.cli": "COMMANDS"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_path(name: str) -> Path | None:
    """The file of module `name`, None when it is not a dnnprobe module."""
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node, except those under ``if TYPE_CHECKING:`` (annotations only, never imported)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _by_name_targets(tree: ast.Module, variable: str) -> set[str]:
    """The ``dnnprobe.`` strings (and f-strings' constant prefixes expanded by `STAGES`) in `variable`'s dict."""
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == variable for t in node.targets):
            for value in ast.walk(node.value):
                if isinstance(value, ast.Constant) and isinstance(value.value, str) and value.value.startswith("dnnprobe."):
                    found.add(value.value)
    if variable == "COMMANDS":  # {stage: f"dnnprobe.stages.{stage}" for stage in STAGES}
        found |= {f"dnnprobe.stages.{stage}" for stage in _stages_tuple(tree)}
    return found


def _stages_tuple(tree: ast.Module) -> tuple[str, ...]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "STAGES" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return ()


def _with_packages(name: str) -> set[str]:
    """`name` and the packages above it: importing a module runs each package's ``__init__.py``."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


@cache
def imports_of(name: str) -> frozenset[str]:
    """The dnnprobe modules that module `name` can import when it runs (see the module docstring)."""
    path = modules()[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names if module_path(f"{base}.{alias.name}")}
    if name in BY_NAME:
        found |= _by_name_targets(tree, BY_NAME[name])
    found = {m for m in found if m == "dnnprobe" or m.startswith("dnnprobe.")}
    closed = set().union(*(_with_packages(m) for m in found)) if found else set()
    return frozenset(m for m in closed if m in modules() and m != name)


def import_graph() -> dict[str, frozenset[str]]:
    return {name: imports_of(name) for name in modules()}


def _edges(graph: dict[str, frozenset[str]], node: str) -> list[str]:
    """`node`'s imports, less those of a package above it: a package is initialised before the modules
    inside it run (a model source using its registry's helpers is not a cycle)."""
    return sorted(n for n in graph[node] if not node.startswith(n + "."))


def find_cycles(graph: dict[str, frozenset[str]]) -> list[str]:
    """Per group of modules that import each other: its shortest cycle from its first module
    (a -> b -> ... -> a) and the whole group."""
    reach = {}
    for start in graph:
        seen, todo = set(), [start]
        while todo:
            for nxt in _edges(graph, todo.pop()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        reach[start] = seen
    cycles, done = [], set()
    for start in sorted(graph):
        if start in done or start not in reach[start]:
            continue
        group = sorted(n for n in reach[start] if start in reach[n])
        done |= set(group)
        paths, queue = {start: [start]}, [start]  # breadth first: the shortest way back to `start`
        while queue:
            node = queue.pop(0)
            if start in _edges(graph, node):
                cycles.append(" -> ".join(paths[node] + [start]) + f" (the group: {', '.join(group)})")
                break
            for nxt in _edges(graph, node):
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    queue.append(nxt)
    return cycles


def closure(start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in imports_of(todo.pop()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen | _with_packages(start) & set(modules())


def code_lines(path: Path) -> int:
    """Non-blank lines that are not comments or docstrings."""
    text = path.read_text()
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                docstrings |= set(range(first.lineno, first.end_lineno + 1))
    code: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type not in skip:
            code |= set(range(token.start[0], token.end[0] + 1))
    return len(code - docstrings)


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def test_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_the_graph_sees_function_level_and_by_name_imports():
    """The checks below are only as good as the graph: it must follow the imports DVC cannot see."""
    graph = import_graph()
    assert "dnnprobe.stages.probe" in graph["dnnprobe.cli"]
    assert {f"dnnprobe.network.sources.{s}" for s in ("torchvision", "timm", "open_clip", "hf")} <= graph[
        "dnnprobe.network.registry"]
    assert "dnnprobe.stimuli.bold5000" in graph["dnnprobe.stages.stimuli"]  # imported inside a function


def test_at_most_three_flat_modules():
    flat = {path.name for path in PACKAGE.glob("*.py")}
    assert flat <= FLAT_ALLOWED, f"flat modules in src/dnnprobe/ besides {sorted(FLAT_ALLOWED)}: {sorted(flat - FLAT_ALLOWED)}"


def test_no_module_over_450_lines_of_code():
    over = {rel(path): n for path in modules().values() if (n := code_lines(path)) > MAX_CODE_LINES}
    assert not over, f"modules over {MAX_CODE_LINES} lines of code: " + ", ".join(f"{p} ({n})" for p, n in sorted(over.items()))


def test_no_function_over_100_lines():
    long = []
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                if (n := node.end_lineno - start + 1) > MAX_FUNCTION_LINES:
                    long.append(f"{rel(path)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: " + ", ".join(sorted(long))


def test_every_subpackage_init_is_a_docstring_only():
    """No re-exports: a stage's dvc.yaml deps are the files it imports, so an ``__init__`` importing its
    submodules would make every stage depend on the whole subpackage."""
    offenders = []
    for path in sorted(PACKAGE.rglob("__init__.py")):
        if path.parent == PACKAGE:
            continue
        body = ast.parse(path.read_text()).body
        docstring = body[:1] if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else []
        if not docstring or len(body) > 1:
            offenders.append(rel(path))
    assert not offenders, f"subpackage __init__.py files that are more than a docstring: {offenders}"


def _top_level_imports(body: list[ast.stmt]) -> list[str]:
    found = []
    for node in body:
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return found


# ---- each stage's dvc.yaml deps, against the static import closure of its stage module ----------


@cache
def source_names() -> tuple[str, ...]:
    tree = ast.parse(modules()["dnnprobe.network.registry"].read_text())
    return tuple(m.rpartition(".")[2] for m in sorted(_by_name_targets(tree, "SOURCES")))


def declared_code(deps: list[str]) -> set[str]:
    """The dnnprobe files a stage's deps cover: a folder dep covers every .py file in it; ``${model.source}``
    stands for every source (its closure reaches them all through the registry)."""
    files = set()
    for dep in deps:
        for expanded in [dep.replace("${model.source}", s) for s in source_names()] if "${model.source}" in dep else [dep]:
            if expanded.startswith("src/dnnprobe"):
                path = REPO / expanded
                files |= {rel(f) for f in path.rglob("*.py")} if path.is_dir() else {expanded}
    return files


def test_each_stage_declares_exactly_its_static_import_closure():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    core = {rel(f) for f in (PACKAGE / "core").rglob("*.py")}
    problems = []
    for name, stage in stages.items():
        imported = {rel(modules()[m]) for m in closure(f"dnnprobe.stages.{name}")}
        assert "src/dnnprobe/cli.py" not in imported, name
        declared = declared_code(stage["deps"])
        # The shared core is listed as a folder (every stage reruns on any edit there): all of it counts.
        missing = sorted(imported - declared)
        unused = sorted(declared - imported - core)
        if missing:
            problems.append(f"stage {name} can import {missing} but dvc.yaml does not list them")
        if unused:
            problems.append(f"stage {name} lists {unused} in dvc.yaml but cannot import them")
    assert not problems, "; ".join(problems)
