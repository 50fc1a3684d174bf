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
