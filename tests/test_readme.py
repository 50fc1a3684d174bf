"""README.md holds each section once (an edit once pasted a stale copy of half of it)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_section_heading_appears_once() -> None:
    headings = Counter(re.findall(r"^#{2,3} .+$", README.read_text(), flags=re.MULTILINE))
    assert [h for h, n in headings.items() if n > 1] == []
    assert len(headings) > 10


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings (code blocks left out)."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    headings = re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_relative_links_and_images_resolve() -> None:
    """The long reference moved to docs/ (issue 18): every relative link of README.md and
    docs/*.md names a file that exists and, after `#`, a heading it has."""
    broken = []
    pages = [README, *sorted((README.parent / "docs").glob("*.md"))]
    assert len(pages) > 5
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path) if path else page
            if not dest.exists() or (anchor and anchor not in _anchors(dest)):
                broken.append(f"{page.name}: {target}")
    assert broken == []
