"""The soak script (make soak) still runs and its checks still hold, on a few rounds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_a_short_soak_submits_or_explains_every_model_round(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "devkit.soak",
            "--rounds",
            "2",
            "--seed",
            "7",
            "--work",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr[-3000:]
    assert "ledger matches Numerai's records exactly: True" in completed.stdout
    assert "models submitted twice in a round: 0" in completed.stdout
    assert "all checks hold: True" in completed.stdout
