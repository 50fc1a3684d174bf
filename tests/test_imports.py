"""Importing the app must stay light: the Functions host imports function_app at every cold start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("tensorflow", "keras", "lightgbm", "onnxruntime", "azure.identity")


def test_importing_the_app_and_every_shared_module_loads_no_heavy_framework() -> None:
    modules = ["function_app"] + sorted(
        f"shared.{p.stem}" for p in (REPO / "shared").glob("*.py") if p.stem not in {"__init__", "__main__"}
    )
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == "[]"
    assert "shared.pipeline" in modules and "shared.model_formats" in modules
