"""Every setting the code reads is declared in infra/, local.settings.json.example and the
README's settings table, and none of those three names a setting the code does not read."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from tests.test_infra import infra_app_settings

ROOT = Path(__file__).resolve().parent.parent
# How the code reads settings: shared/settings.py's typed reader, env.get in telemetry.
READERS = {
    "required",
    "optional",
    "text",
    "number",
    "optional_number",
    "flag",
    "choice",
    "queue_name",
    "get",
}
SETTING_NAME = re.compile(r"^[A-Z][A-Z0-9_]{3,}$")
# Read by the Functions host or the platform, not by our code.
HOST_SETTINGS = {
    "AzureWebJobsStorage",
    "FUNCTIONS_WORKER_RUNTIME",
    "PYTHON_ISOLATE_WORKER_DEPENDENCIES",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
# Only for local development: the sandbox's URL, and Azurite's connection string.
LOCAL_ONLY = {"NUMERAI_API_URL", "MODELS_STORAGE_CONNECTION_STRING"}


def settings_the_code_reads() -> set[str]:
    """Names passed as string literals to a settings reader, plus %NAME% in trigger bindings."""
    names = set(re.findall(r"%([A-Z][A-Z0-9_]+)%", (ROOT / "function_app.py").read_text()))
    for path in [ROOT / "function_app.py", *(ROOT / "shared").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in READERS
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and SETTING_NAME.match(node.args[0].value)
            ):
                names.add(node.args[0].value)
    return names


def not_host(names: set[str]) -> set[str]:
    return {n for n in names if n.split("__")[0] not in HOST_SETTINGS}


def readme_settings() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Za-z0-9_]+)` \|", table, flags=re.MULTILINE))


def test_the_scan_finds_the_settings_we_know_of() -> None:
    code = settings_the_code_reads()
    assert {
        "NUMERAI_SCHEDULE",
        "NUMERAI_SECRET_KEY",
        "BATCH_ROWS",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "AZURE_CLIENT_ID",
    } <= code
    assert len(code) >= 20


def test_infra_sets_every_setting_the_code_reads_and_nothing_else() -> None:
    infra = set(infra_app_settings())
    code = settings_the_code_reads()
    assert not_host(infra) == code - LOCAL_ONLY
    assert not infra & LOCAL_ONLY


def test_local_settings_example_lists_every_setting_and_nothing_else() -> None:
    values = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    assert not_host(set(values)) == settings_the_code_reads()


def test_the_readme_table_lists_every_setting_and_nothing_else() -> None:
    assert readme_settings() == settings_the_code_reads()
