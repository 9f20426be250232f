"""The generated parts of docs/development.md: the module map and the rerun table, from the code itself.

``python tests/make_development_map.py`` prints them; ``--write`` puts them into docs/development.md between
its ``<!-- begin generated: NAME -->`` and ``<!-- end generated: NAME -->`` lines. tests/test_docs.py fails
when the page differs from what this would write, so the map cannot drift from the tree again.

The module map has a line per subpackage and module: the first sentence of its docstring (shortened when
long). The rerun table says, for each file under src/dnnprobe/, which stages list it in dvc.yaml: editing
it reruns them (and the stages after them, when their outputs change).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "development.md"
PACKAGE = "src/dnnprobe"
MAX_DESCRIPTION = 110
SOURCE_DEP = "${model.source}"


def first_sentence(docstring: str) -> str:
    """The docstring's first sentence as Markdown, shortened to about `MAX_DESCRIPTION` characters."""
    text = " ".join(docstring.split("\n\n")[0].split())
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")
    text = _up_to_first_stop(text)
    if len(text) > MAX_DESCRIPTION:
        text = re.sub(r"\s*\([^()]*\)", "", text)
    if len(text) > MAX_DESCRIPTION:
        cut = text[:MAX_DESCRIPTION].rsplit(" ", 1)[0].rstrip(",:;")
        text = cut + " …" if cut.count("`") % 2 == 0 else cut.rsplit("`", 1)[0].rstrip() + " …"
    return text


def _up_to_first_stop(text: str) -> str:
    """`text` up to its first ``.``, ``;``, ``?`` or ``!`` that ends a sentence: followed by a space, outside
    parentheses and code. A question mark is kept."""
    depth, code = 0, False
    for i, char in enumerate(text):
        code ^= char == "`"
        depth += (char == "(") - (char == ")") if not code else 0
        if not code and depth == 0 and char in ".;?!" and (i + 1 == len(text) or text[i + 1] == " "):
            return text[: i + 1] if char in "?!" else text[:i]
    return text.rstrip(".")


def docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


def module_map(root: Path = REPO) -> str:
    """A heading line per subpackage (its ``__init__`` docstring), then a line per module in it."""
    package = root / PACKAGE
    lines = ["- `src/dnnprobe/`: " + first_sentence(docstring(package / "__init__.py"))]
    lines += [f"  - `{p.name}`: {first_sentence(docstring(p))}" for p in sorted(package.glob("*.py"))
              if p.name != "__init__.py"]
    for folder in sorted(p.parent for p in package.rglob("__init__.py") if p.parent != package):
        depth = len(folder.relative_to(package).parts)
        indent = "  " * (depth - 1)
        lines.append(f"{indent}- `{folder.relative_to(root).as_posix()}/`: "
                     + first_sentence(docstring(folder / "__init__.py")))
        lines += [f"{indent}  - `{p.name}`: {first_sentence(docstring(p))}" for p in sorted(folder.glob("*.py"))
                  if p.name != "__init__.py"]
    return "\n".join(lines)


def stages_listing(dvc_yaml: str, files: list[str], sources: list[str]) -> dict[str, list[str]]:
    """For each file under src/dnnprobe (paths relative to the repository), the stages whose deps list it; a
    folder dep lists every file in it; a model source's file counts for the stages run with that source."""
    stages = yaml.safe_load(dvc_yaml)["stages"]
    found: dict[str, list[str]] = {f: [] for f in files}
    chosen: dict[str, str] = {}
    for stage, spec in stages.items():
        for dep in spec.get("deps", []):
            for source in sources if SOURCE_DEP in dep else [None]:
                path = dep.replace(SOURCE_DEP, source) if source else dep
                for f in files:
                    if (f == path or f.startswith(path.rstrip("/") + "/")) and stage not in found[f]:
                        found[f].append(stage)
                        if source:
                            chosen[f] = source
    for f, source in chosen.items():
        found[f][-1] += f" (runs with model.source: {source} only)"
    return found


def rerun_table(dvc_yaml: str, files: list[str], sources: list[str]) -> str:
    """Markdown: edit this file -> these stages rerun. The shared core (a folder dep of every stage) is one row."""
    listing = stages_listing(dvc_yaml, files, sources)
    rows, core_done = [], False
    for f, stages in sorted(listing.items()):
        if f.startswith(f"{PACKAGE}/core/"):
            if core_done:
                continue
            f, core_done = f"{PACKAGE}/core/ (any file)", True
        rows.append(f"| `{f.removeprefix(PACKAGE + '/')}` | {', '.join(stages) if stages else '(none)'} |")
    return "\n".join(["| edit this file (under src/dnnprobe/) | these stages rerun |", "|---|---|", *rows])


def current_rerun_table(root: Path = REPO) -> str:
    files = sorted(p.relative_to(root).as_posix() for p in (root / PACKAGE).rglob("*.py"))
    sources = sorted(p.stem for p in (root / PACKAGE / "network" / "sources").glob("*.py") if p.stem != "__init__")
    return rerun_table((root / "dvc.yaml").read_text(), files, sources)


def sections(root: Path = REPO) -> dict[str, str]:
    return {"module map": module_map(root), "rerun table": current_rerun_table(root)}


def render(page: str, generated: dict[str, str]) -> str:
    """`page` with each generated section replaced; a missing marker is an error."""
    for name, body in generated.items():
        pattern = re.compile(rf"(<!-- begin generated: {name} -->\n).*?(<!-- end generated: {name} -->)", re.S)
        if not pattern.search(page):
            raise SystemExit(f"{PAGE.name}: no '<!-- begin generated: {name} -->' ... '<!-- end generated: {name} -->'")
        page = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), page)
    return page


def main(argv: list[str]) -> None:
    if argv == ["--write"]:
        PAGE.write_text(render(PAGE.read_text(), sections()))
    elif not argv:
        for name, body in sections().items():
            print(f"<!-- {name} -->\n{body}\n")
    else:
        raise SystemExit("usage: python tests/make_development_map.py [--write]")


if __name__ == "__main__":
    main(sys.argv[1:])
