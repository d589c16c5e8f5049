"""README.md and docs/: every relative link reaches a file (and heading); every setting is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose(markdown: str) -> str:
    """The text outside code blocks and code spans, where a link is a link."""
    return INLINE_CODE.sub("", FENCE.sub("", markdown))


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())  # a link: its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a markdown page, with GitHub's -1, -2 suffixes for repeats."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        heading = re.match(r"#{1,6} (.+)", line)
        if not heading:
            continue
        anchor = github_anchor(heading.group(1))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(_prose(page.read_text()))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto: are not checked here
    ]


def test_the_pages_are_there() -> None:
    names = {page.name for page in PAGES}
    for name in ("README.md", "security.md", "schemas.md", "sinks.md", "replay.md", "observability.md",
                 "configuration.md", "event-time.md", "testing.md", "operations.md", "archive.md",
                 "detections.md", "architecture.md", "contract.md"):  # fmt: skip
        assert name in names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_reaches_a_file_and_heading(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_readme_links_every_docs_page() -> None:
    readme = relative_links(ROOT / "README.md")
    missing = [
        page.name
        for page in PAGES[1:]
        if f"docs/{page.name}" not in {link.partition("#")[0] for link in readme}
    ]
    assert not missing, f"README.md links no docs/ page named {missing}"


def test_every_setting_is_in_the_configuration_page() -> None:
    """Every STREAMAPP_* variable the code reads appears in docs/configuration.md."""
    settings = (ROOT / "streamapp" / "settings.py").read_text()
    read = {f"STREAMAPP_{name}" for name in re.findall(r'\bget\(\s*"([A-Z][A-Z0-9_]+)"', settings)}
    for module in (ROOT / "streamapp").rglob("*.py"):
        read |= set(re.findall(r"\bSTREAMAPP_[A-Z0-9_]*[A-Z0-9]\b", module.read_text()))
    assert len(read) > 40  # the settings the reader finds (a broken regex would find none)
    page = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"STREAMAPP_[A-Z0-9_]*[A-Z0-9]", page))
    assert not read - documented, f"not in docs/configuration.md: {sorted(read - documented)}"


def test_anchors_follow_github() -> None:
    heading = "Settings (environment, prefix `STREAMAPP_`)"
    assert github_anchor(heading) == "settings-environment-prefix-streamapp_"
    assert github_anchor("Speed: what makes it fast, and how to key your producers") == (
        "speed-what-makes-it-fast-and-how-to-key-your-producers"
    )
