"""The Makefile's set-up: each target installs what it uses, and nothing runs on a Python
the project does not support. Checked with `make -n` (print, do not run)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Prerequisites that look missing, so that `make -n` prints how it would install them.
MISSING = ("CHROMIUM=/nonexistent/chromium", "INFRA_VENV=/nonexistent/venv-infra")


def dry_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-n", *args, *MISSING],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("target", ["demo", "local-stack", "bench", "soak", "unit"])
def test_the_demo_and_benchmarks_need_only_python_and_npm(target: str) -> None:
    """No sudo, apt or Chromium (the report page's browser tests), no checkov (infra's)."""
    completed = dry_run(target)
    assert completed.returncode == 0, completed.stderr
    assert "apt-get" not in completed.stdout and "sudo" not in completed.stdout
    assert "checkov" not in completed.stdout


def test_the_tests_install_the_browser_and_checkov_they_use() -> None:
    completed = dry_run("test")
    assert "apt-get install -y --no-install-recommends chromium" in completed.stdout
    assert "checkov==" in completed.stdout


def test_an_unsupported_python_is_refused_before_any_venv_is_made() -> None:
    # The Makefile finds a bare name on PATH or among pyenv's versions, as a participant's would.
    completed = dry_run("demo", "PYTHON=python3.10")
    if "cannot run 'python3.10'" in completed.stderr:
        pytest.skip("no Python 3.10 on this machine to try")
    assert completed.returncode != 0
    assert "is Python 3.10, and this project needs Python 3.11, 3.12 or 3.13" in completed.stderr
    assert "-m venv" not in completed.stdout
