"""Importing the app must stay light: the Functions host imports function_app at every cold start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("tensorflow", "keras", "lightgbm", "onnxruntime", "xgboost", "catboost", "sklearn", "scipy",
         "numerai_tools", "azure.identity")
# These run only inside a model's worker process, never in the run's own.
WORKER_SIDE = {"shared.worker.engine", "shared.worker.live_data", "shared.worker.submission",
               "shared.worker.__main__"}


def test_the_run_process_never_imports_a_framework() -> None:
    modules = ["function_app"] + sorted(
        name for name in (_module_name(p) for p in (REPO / "shared").rglob("*.py"))
        if name not in WORKER_SIDE and not name.startswith("shared.formats.") and not name.endswith("__main__")
    )
    assert {"shared.pipeline", "shared.worker.supervisor", "shared.worker.forkserver", "shared.formats"} <= set(modules)
    assert _heavy_after_importing(modules, HEAVY) == []


def test_format_modules_import_their_framework_only_when_loading() -> None:
    modules = sorted(_module_name(p) for p in (REPO / "shared" / "formats").glob("*.py"))
    assert "shared.formats.keras" in modules and "shared.formats.numerai_pickle" in modules
    frameworks = ("tensorflow", "keras", "lightgbm", "onnxruntime", "xgboost", "catboost", "sklearn", "joblib")
    assert _heavy_after_importing(modules, frameworks) == []


def _heavy_after_importing(modules: list[str], heavy: tuple[str, ...]) -> list[str]:
    """Which of `heavy` a fresh interpreter has loaded after importing `modules`."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
