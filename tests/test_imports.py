"""Importing the app must stay light: the Functions host imports function_app at every cold start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = (
    "tensorflow",
    "keras",
    "lightgbm",
    "onnxruntime",
    "xgboost",
    "catboost",
    "sklearn",
    "scipy",
    "numerai_tools",
    "azure.identity",
)
# These run only inside a model's worker process, never in the run's own. The submission rules
# are not among them: they are the app's own, without numerai-tools (whose scipy is heavy).
WORKER_SIDE = {
    "shared.worker.engine",
    "shared.data.live_data",
    "shared.worker.__main__",
}


def test_the_run_process_never_imports_a_framework() -> None:
    modules = ["function_app"] + sorted(
        name
        for name in (_module_name(p) for p in (REPO / "shared").rglob("*.py"))
        if name not in WORKER_SIDE
        and not name.startswith("shared.formats.")
        and not name.endswith("__main__")
    )
    assert {
        "shared.run.job",
        "shared.triggers.test_run",
        "shared.worker.supervisor",
        "shared.worker.forkserver",
        "shared.formats",
    } <= set(modules)
    assert _heavy_after_importing(modules, HEAVY) == []


def test_format_modules_import_their_framework_only_when_loading() -> None:
    modules = sorted(_module_name(p) for p in (REPO / "shared" / "formats").glob("*.py"))
    assert "shared.formats.keras" in modules and "shared.formats.numerai_pickle" in modules
    frameworks = (
        "tensorflow",
        "keras",
        "lightgbm",
        "onnxruntime",
        "xgboost",
        "catboost",
        "sklearn",
        "joblib",
    )
    assert _heavy_after_importing(modules, frameworks) == []


def test_indexing_the_app_loads_only_azure_functions_and_the_log_redaction() -> None:
    # The host imports function_app and indexes it at every cold start, within Flex's 30 s limit and
    # after downloading the package: everything else (numerapi, Blob Storage, pandas, pydantic,
    # numerai-tools with scipy, telemetry) must wait for the first invocation.
    added = _loaded_by(
        "import function_app; function_app.app.get_functions()", before="import azure.functions"
    )
    assert sorted(
        m
        for m in added
        if m.partition(".")[0] not in sys.stdlib_module_names
        and not m.startswith("azure.functions.")
    ) == ["function_app", "shared", "shared.console", "shared.redaction"]


def _heavy_after_importing(modules: list[str], heavy: tuple[str, ...]) -> list[str]:
    """Which of `heavy` a fresh interpreter has loaded after importing `modules`."""
    code = f"import importlib\nfor name in {modules!r}: importlib.import_module(name)"
    return [m for m in heavy if m in _loaded_by(code)]


def _loaded_by(code: str, before: str = "") -> list[str]:
    """The modules a fresh interpreter has loaded after running `before` and then `code`, less those of `before`."""
    script = (
        "import json, sys\n"
        f"{before}\n"
        "already = set(sys.modules)\n"
        f"{code}\n"
        "print(json.dumps(sorted(set(sys.modules) - already)))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_functions_logs_leave_out_the_azure_sdks_request_headers() -> None:
    """Importing the app, as the host does, keeps the SDK's per-request INFO records (every
    request's and response's headers) out of the host's logs and Application Insights; its
    warnings still pass. In a fresh interpreter: the suite's own fixtures set these levels."""
    code = (
        # The Functions worker sends the root logger's records, from DEBUG up, to the host.
        "import logging; logging.getLogger().setLevel(logging.DEBUG); import function_app; "
        "sdk = logging.getLogger('azure.core.pipeline.policies.http_logging_policy'); "
        "print(sdk.isEnabledFor(logging.INFO), sdk.isEnabledFor(logging.WARNING))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.stdout.split() == ["False", "True"], completed.stderr
