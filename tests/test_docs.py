"""The README stays a short front page, and every relative link in it and in docs/ resolves.

GitHub turns a heading into an anchor by lowercasing it, dropping what is not a letter, digit, space,
hyphen or underscore, and turning spaces into hyphens (a repeated heading gets -1, -2, ...): the links
are checked against anchors made the same way.
"""

from __future__ import annotations

import re
from pathlib import Path

from helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 200


def _without_code(text: str) -> str:
    """The text outside fenced code blocks and inline code, where a link is a link."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S).splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    targets = re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", _without_code(page.read_text()))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # not http:, mailto:, ...


def test_every_relative_link_and_anchor_resolves():
    checked = 0
    for page in PAGES:
        for link in relative_links(page):
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            assert target.exists(), f"{page.relative_to(REPO)}: link to {link}: {target} does not exist"
            if anchor:
                assert target.suffix == ".md", f"{page.relative_to(REPO)}: anchor into {target.name}"
                assert anchor in anchors(target), (
                    f"{page.relative_to(REPO)}: link to {link}: no heading with anchor #{anchor} in {target.name}")
            checked += 1
    assert checked >= len(PAGES)  # the README links every page, and every page links back


def test_the_anchor_rule_matches_github():
    page = REPO / "docs" / "performance.md"
    assert "larger-stimulus-sets-things-nsd-bench_scalepy" in anchors(page)


def test_readme_is_a_short_front_page_linking_every_docs_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    linked = {(REPO / link.partition("#")[0]).resolve() for link in relative_links(REPO / "README.md")}
    for page in sorted((REPO / "docs").glob("*.md")):
        assert page.resolve() in linked, f"README.md does not link {page.relative_to(REPO)}"


def test_development_page_is_the_generated_map_of_the_tree():
    """docs/development.md's module map and rerun table are what tests/make_development_map.py writes from the
    package's docstrings and dvc.yaml; after moving a module or editing dvc.yaml, run it with --write."""
    from make_development_map import PAGE, render, sections

    page = PAGE.read_text()
    assert page == render(page, sections()), (
        "docs/development.md is out of date: run `python tests/make_development_map.py --write`")
