"""The documentation's links and shape: every relative link in README.md and docs/*.md points at an existing
file and, with a #anchor, at a heading of that file (GitHub's heading slugs); README.md stays short and its
table of contents links every docs page."""
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
MARKDOWN_FILES = [README, *sorted(DOCS.glob("*.md"))]
EXPECTED_PAGES = ["architecture.md", "data.md", "differences.md", "flags.md", "metrics.md", "outputs.md",
                  "reliability.md", "research-workflow.md", "speed.md", "torchrun.md"]

FENCE = re.compile(r"^ {0,3}(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
CODE_SPAN = re.compile(r"(`+).*?\1")
# [text](target) or ![alt](target), target optionally in <...> and followed by a "title"
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^()\s<>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:|//)")


def _prose_lines(text):
    """(line number, line) of the lines outside fenced code blocks, with inline code spans removed."""
    in_fence = None
    for number, line in enumerate(text.splitlines(), 1):
        fence = FENCE.match(line)
        if fence:
            if in_fence is None:
                in_fence = fence.group(1)
            elif fence.group(1) == in_fence:
                in_fence = None
            continue
        if in_fence is None:
            yield number, CODE_SPAN.sub("", line)


def slug(heading):
    """GitHub's anchor for a heading's text: markup removed, lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    """Every heading anchor of a Markdown file, repeated headings numbered as GitHub does (-1, -2, ...)."""
    found, seen = set(), {}
    for _, line in _prose_lines(Path(path).read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links_in(text):
    """(line number, target) of every link in a Markdown text, outside code."""
    for number, line in _prose_lines(text):
        for match in LINK.finditer(line):
            yield number, match.group(1)


def links(path):
    """(line number, target) of every link in a Markdown file, outside code."""
    return links_in(Path(path).read_text(encoding="utf-8"))


def broken_links(path, root):
    """The problems of the relative links of the Markdown file `path` (files under `root`): a target that
    does not exist or lies outside `root`, or a #anchor that no heading of the target Markdown file has.
    External links (http:, mailto:, ...) are not checked."""
    path, root = Path(path).resolve(), Path(root).resolve()
    problems = []
    for number, target in links(path):
        if not target or SCHEME.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        where = f"{path.name}:{number}: {target}"
        resolved = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not resolved.is_relative_to(root):
            problems.append(f"{where}: outside {root}")
        elif not resolved.exists():
            problems.append(f"{where}: no file {resolved}")
        elif anchor and resolved.suffix.lower() == ".md" and unquote(anchor) not in anchors(resolved):
            problems.append(f"{where}: no heading with anchor #{anchor} in {resolved.name}")
    return problems


def _section(text, title):
    """The lines of the '## title' section of a Markdown text (up to the next heading of level <= 2)."""
    lines, inside = [], False
    for _, line in _prose_lines(text):
        match = HEADING.match(line)
        if match and len(match.group(1)) <= 2:
            if inside:
                break
            inside = match.group(2).strip() == title
            continue
        if inside:
            lines.append(line)
    return "\n".join(lines)


# --- the checker itself ---------------------------------------------------------------------------------------

def test_slug_follows_github():
    assert slug("Reproducing the paper's tables") == "reproducing-the-papers-tables"
    assert slug("Metrics: two protocols, side by side") == "metrics-two-protocols-side-by-side"
    assert slug("Baselines, seeds and Δm") == "baselines-seeds-and-δm"
    assert slug("`--resume` and *interruptions*") == "--resume-and-interruptions"
    assert slug("Differences from the original code") == "differences-from-the-original-code"


def test_checker_finds_broken_links_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text(
        "# Page\n\n## Getting the data\n\n## Baselines, seeds and Δm\n\n## Notes\n\n## Notes\n\n"
        "```\n## not a heading\n```\n", encoding="utf-8")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text(
        "# Top\n\n"
        "[ok](docs/page.md) [ok](docs/page.md#getting-the-data) [ok](docs/page.md#baselines-seeds-and-δm)\n"
        "[ok](docs/page.md#notes-1) [ok](#top) [ok](code.py) [ok](https://example.org/x.md) ![ok](code.py)\n"
        "[missing file](docs/nope.md)\n"
        "[missing anchor](docs/page.md#getting-data)\n"
        "[code-block heading](docs/page.md#not-a-heading)\n"
        "[missing here](#nowhere)\n"
        "[outside](../elsewhere.md)\n"
        "`[in a code span](docs/nope.md)`\n"
        "```\n[in a fence](docs/nope.md)\n```\n", encoding="utf-8")
    problems = broken_links(tmp_path / "README.md", tmp_path)
    assert len(problems) == 5, problems
    for line, target in [(5, "docs/nope.md"), (6, "docs/page.md#getting-data"),
                         (7, "docs/page.md#not-a-heading"), (8, "#nowhere"), (9, "../elsewhere.md")]:
        assert any(problem.startswith(f"README.md:{line}: {target}:") for problem in problems), (target, problems)

    # the repaired file passes
    (tmp_path / "README.md").write_text("# Top\n\n[ok](docs/page.md#notes) [ok](#top)\n", encoding="utf-8")
    assert broken_links(tmp_path / "README.md", tmp_path) == []


# --- the repository's documentation ---------------------------------------------------------------------------

def test_docs_pages_exist():
    present = {path.name for path in DOCS.glob("*.md")}
    assert set(EXPECTED_PAGES) <= present, sorted(set(EXPECTED_PAGES) - present)


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_resolve(path):
    assert broken_links(path, ROOT) == []


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines (at most 200)"


def test_readme_contents_link_every_docs_page():
    contents = _section(README.read_text(encoding="utf-8"), "Contents")
    assert contents, "README.md has no '## Contents' section"
    targets = {target.partition("#")[0] for _, target in links_in(contents)}
    pages = {f"docs/{path.name}" for path in DOCS.glob("*.md") if path.name != "README.md"}
    assert pages and pages <= targets, sorted(pages - targets)


def test_docs_index_links_every_page():
    index = DOCS / "README.md"
    targets = {target.partition("#")[0] for _, target in links(index)}
    pages = {path.name for path in DOCS.glob("*.md") if path.name != "README.md"}
    assert pages <= targets, sorted(pages - targets)


def test_readme_keeps_the_test_command_and_the_papers_numbers():
    text = README.read_text(encoding="utf-8")
    assert "make test" in text
    for command, numbers in [("python main_cross_cs.py --uncertainty_weights", ["66.51", "93.56", "0.0122", "19.40"]),
                             ("python main_cross_nyu.py --uncertainty_weights", ["30.31", "63.02", "0.5954", "0.2235"])]:
        row = next((line for line in text.splitlines() if line.startswith("|") and command in line), None)
        assert row is not None, command
        assert [cell.strip() for cell in row.strip("|").split("|")][-4:] == numbers


def test_differences_page_keeps_its_heading():
    assert "differences-from-the-original-code" in anchors(DOCS / "differences.md")


def test_benchmarks_are_shown_as_modules():
    for path in MARKDOWN_FILES:
        assert not re.search(r"python3? bench/", path.read_text(encoding="utf-8")), path
