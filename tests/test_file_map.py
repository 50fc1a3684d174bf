"""README.md's "File map" names the tree as it is: every path it lists exists, and it lists
every module and sub-package of shared/ and every top-level entry git tracks.

Modules inside shared/ move (issue 18); this test makes the move update the map with it.
No services: it reads README.md, the file system and `git ls-files`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# A row of the map: `| `path` | what it is |`, the path in backticks in the first column.
ROW = re.compile(r"^\| `([^`]+)` \|", flags=re.MULTILINE)


def file_map_section() -> str:
    text = README.read_text()
    assert "\n## File map\n" in text, "README.md has no '## File map' section"
    return text.split("\n## File map\n", 1)[1].split("\n## ", 1)[0]


def listed_paths() -> list[str]:
    """The map's paths, folders without their trailing slash."""
    return [path.rstrip("/") for path in ROW.findall(file_map_section())]


def shared_modules() -> set[str]:
    """Each .py file of shared/ but __init__.py and __main__.py, and each sub-package folder
    (any folder below shared/ that holds Python, with an __init__.py or not)."""
    shared = ROOT / "shared"
    sources = [p for p in shared.rglob("*.py") if "__pycache__" not in p.parts]
    modules = {p for p in sources if p.name not in {"__init__.py", "__main__.py"}}
    packages = {
        folder for p in sources for folder in p.relative_to(shared).parents if folder != Path(".")
    }
    packages = {shared / folder for folder in packages}
    return {p.relative_to(ROOT).as_posix() for p in modules | packages}


def tracked_top_level() -> set[str]:
    """The first component of every path git tracks: top-level files and folders."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no `git ls-files` to compare the map with")
    files = (
        subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, timeout=60
        )
        .stdout.decode()
        .split("\0")
    )
    return {f.split("/", 1)[0] for f in files if f}


def test_the_map_is_a_table_of_paths() -> None:
    paths = listed_paths()
    assert len(paths) > 50
    assert [p for p in set(paths) if paths.count(p) > 1] == []


def test_every_listed_path_exists() -> None:
    assert [p for p in listed_paths() if not (ROOT / p).exists()] == []


def test_every_module_and_sub_package_of_shared_is_listed() -> None:
    modules = shared_modules()
    assert {"shared/run/job.py", "shared/worker"} <= modules  # the scan finds what we know of
    assert sorted(modules - set(listed_paths())) == []


def test_every_top_level_file_and_folder_git_tracks_is_listed() -> None:
    top = tracked_top_level()
    assert {"README.md", "shared", "tests"} <= top
    assert sorted(top - set(listed_paths())) == []
