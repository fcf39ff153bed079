"""The README and the pages under docs/: every relative link reaches a file, every #anchor a heading.

Anchors are GitHub's heading slugs (lower case; punctuation other than ``-`` and ``_`` dropped; spaces become
``-``; a repeated heading gets ``-1``, ``-2``, ...). Links inside fenced code blocks and inline code are not
links. The checker is tested on a small folder with a broken file link and a broken anchor, so that it cannot
pass by finding nothing.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
_INLINE_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (inline code, emphasis and link syntax rendered as their text)."""
    text = _INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every #anchor the headings of a markdown file define."""
    seen: dict[str, int] = {}
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if match:
            slug = _slug(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            if count:
                seen.setdefault(f"{slug}-{count}", 1)
    return set(seen)


def _paragraphs(path: Path) -> list[tuple[int, str]]:
    """(first line number, text) of each paragraph outside fenced code blocks, inline code replaced by a word.

    A link's text may wrap onto the next line, and so may a code span, but neither crosses a paragraph."""
    groups: list[list[tuple[int, str]]] = [[]]
    previous = None
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        if not line.strip() or (previous is not None and number != previous + 1):  # blank line or code block
            groups.append([])
        if line.strip():
            groups[-1].append((number, line))
        previous = number
    paragraphs = []
    for group in filter(None, groups):
        text = "\n".join(line for _, line in group)
        text = _INLINE_CODE_SPAN.sub(lambda m: "code" + "\n" * m[0].count("\n"), text)  # keep line numbers
        paragraphs.append((group[0][0], text))
    return paragraphs


def broken_links(path: Path, root: Path) -> list[str]:
    """'file:line: target (why)' for each relative link of ``path`` that misses a file or a heading."""
    problems = []
    for start, paragraph in _paragraphs(path):
        for match in _LINK.finditer(paragraph):
            target = match.group(2)
            if _SCHEME.match(target):
                continue  # http(s), mailto: not checked offline
            number = start + paragraph.count("\n", 0, match.start())
            where = f"{path.relative_to(root)}:{number}: {target}"
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            if root.resolve() not in (resolved, *resolved.parents):
                problems.append(f"{where} (outside the repository)")
            elif not resolved.exists():
                problems.append(f"{where} (no such file)")
            elif anchor:
                if resolved.suffix != ".md":
                    problems.append(f"{where} (an anchor into a file that is not markdown)")
                elif anchor not in anchors(resolved):
                    problems.append(f"{where} (no heading with this anchor in {resolved.name})")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_reaches_a_file_and_a_heading(page):
    assert broken_links(page, REPO) == []


def test_docs_pages_are_all_linked_from_the_readme():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    linked = {m.group(2).partition("#")[0] for m in _LINK.finditer(readme)}
    pages = {f"docs/{p.name}" for p in PAGES[1:]}
    assert pages and pages <= linked, sorted(pages - linked)


def test_the_checker_finds_a_broken_file_link_and_a_broken_anchor(tmp_path):
    (tmp_path / "docs").mkdir()
    heading = "## Result: 97 % (`niaf-eval`)\n"
    (tmp_path / "docs" / "page.md").write_text(f"# A page\n\n{heading}\n{heading}")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\n\n"
        "[fine](docs/page.md) [anchor](docs/page.md#result-97--niaf-eval)"
        " [again](docs/page.md#result-97--niaf-eval-1)\n"
        "`a code span\nover two lines` and [a link\nover two lines](docs/page.md#result-97--niaf-eval)\n"
        "[self](#title) [web](https://example.com/x.md) `[not a link](missing.md)`\n"
        "```\n[in code](missing.md)\n```\n"
        "[gone](docs/missing.md) [bad anchor](docs/page.md#results) [bad self](#nothing)"
        " [up](../outside.md)\n\n"
        "A [wrapped\nlink](docs/gone.md) is a link.\n")
    assert broken_links(readme, tmp_path) == [
        "README.md:11: docs/missing.md (no such file)",
        "README.md:11: docs/page.md#results (no heading with this anchor in page.md)",
        "README.md:11: #nothing (no heading with this anchor in README.md)",
        "README.md:11: ../outside.md (outside the repository)",
        "README.md:13: docs/gone.md (no such file)",
    ]


def test_github_heading_slugs():
    assert _slug("A policy that sees: pixels + proprioception") == "a-policy-that-sees-pixels--proprioception"
    assert _slug("`python -m niaf_train.demo`: the main job") == "python--m-niaf_traindemo-the-main-job"
    assert _slug("The main job's checkpoint") == "the-main-jobs-checkpoint"
    assert _slug("NIAF: Action Fields for 🤗 transformers") == "niaf-action-fields-for--transformers"
    assert _slug("Relative (delta) actions, **ψ** and [links](x.md)") == "relative-delta-actions-ψ-and-links"


def test_readme_installs_the_torch_ci_installs_before_the_package():
    """The README pins the torch build .ci/run installs, before the package, and runs CI's test command."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    pins = set(re.findall(r"pip install (torch==[\w.+]+)", ci))
    assert len(pins) == 1, pins
    pin = pins.pop()
    test_line = next(line for line in readme.splitlines() if line.endswith("python -m pytest"))
    assert test_line == f'pip install {pin} && pip install -e ".[dev]" && python -m pytest'
    assert "\npython -m pytest\n" in ci and 'python -m pip install -e ".[dev]"' in ci
    assert f"pip install {pin}" in readme.split("## Install", 1)[1].split("pip install -e", 1)[0]
    # and it is the long description pyproject.toml declares
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["readme"] == "README.md"
