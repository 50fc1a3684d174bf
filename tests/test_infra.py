"""Offline checks of the Azure deployment in infra/: no Bicep compiler and no Azure.

Every Bicep file must parse; checkov (in its own venv, `.venv-infra`, made by
`make setup`) must find no failed check, and every check skipped in the Bicep
must say why; the settings that keep secrets and data private must be set as
written, since checkov does not test all of them.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
CHECKOV = ROOT / ".venv-infra" / "bin" / "checkov"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# Checks that pass today: 29. A scan that quietly finds fewer resources fails here.
MIN_PASSED_CHECKS = 25
MIN_JUSTIFICATION_LENGTH = 20

# The Pythons requirements.txt is pinned for (Numerai's hosted runner's py3.11 and py3.12 locks).
SUPPORTED_PYTHONS = ["3.11", "3.12"]

# The worker runtime setting is forbidden on Flex Consumption (functionAppConfig.runtime
# replaces it); the local-only settings are checked by tests/test_settings_agreement.py.
FORBIDDEN_ON_FLEX = "FUNCTIONS_WORKER_RUNTIME"


def parse(path: Path) -> dict[str, Any]:
    """The Bicep file as pycep's JSON-like tree; a syntax error names the file."""
    try:
        return BicepParser().parse(file_path=path)
    except Exception as exc:  # lark's errors carry only a line and column
        pytest.fail(f"{path.relative_to(ROOT)} does not parse: {exc}")


def resource(path: Path, resource_type: str) -> dict[str, Any]:
    """The config of the one resource of this type that the file creates (not an `existing` one)."""
    created = [r for r in parse(path)["resources"].values()
               if r["type"] == resource_type and not r["existing"]]
    assert len(created) == 1, f"{path.name}: expected one {resource_type}, found {len(created)}"
    return created[0]["config"]


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, Any]:
    """checkov's JSON report on infra/ (without --quiet, which drops passed and skipped checks)."""
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV.relative_to(ROOT)} is missing: run make setup")
    completed = subprocess.run(
        [str(CHECKOV), "--directory", str(INFRA), "--framework", "bicep", "--output", "json", "--skip-download"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    # Exit code 1 means failed checks, which the tests below name; anything else is checkov failing.
    assert completed.returncode in (0, 1), completed.stderr[-2000:]
    return json.loads(completed.stdout)


def test_there_is_infrastructure_to_check() -> None:
    assert INFRA / "main.bicep" in BICEP_FILES
    assert len(BICEP_FILES) > 1


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_bicep_file_parses_and_declares_resources(path: Path) -> None:
    assert parse(path).get("resources"), f"{path.relative_to(ROOT)} parsed to no resources"


def test_checkov_finds_no_failed_check(checkov_report: dict[str, Any]) -> None:
    summary = checkov_report["summary"]
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
              for c in checkov_report["results"]["failed_checks"]]
    assert failed == []
    assert summary["parsing_errors"] == 0
    assert summary["passed"] >= MIN_PASSED_CHECKS, summary


def test_every_skipped_check_says_why(checkov_report: dict[str, Any]) -> None:
    unexplained = [f"{c['check_id']} {c['resource']} ({c['file_path']})"
                   for c in checkov_report["results"]["skipped_checks"]
                   if len(c["check_result"].get("suppress_comment", "").strip()) < MIN_JUSTIFICATION_LENGTH
                   or c["check_result"]["suppress_comment"] == "No comment provided"]
    assert unexplained == []


def test_storage_accepts_only_entra_id_over_tls_1_2() -> None:
    properties = resource(INFRA / "app" / "storage.bicep", "Microsoft.Storage/storageAccounts")["properties"]
    assert properties["allowSharedKeyAccess"] is False
    assert properties["allowBlobPublicAccess"] is False
    assert properties["minimumTlsVersion"] == "TLS1_2"
    assert properties["supportsHttpsTrafficOnly"] is True


def test_key_vault_uses_rbac_and_keeps_deleted_secrets() -> None:
    properties = resource(INFRA / "app" / "keyvault.bicep", "Microsoft.KeyVault/vaults")["properties"]
    assert properties["enableRbacAuthorization"] is True
    assert properties["enableSoftDelete"] is True
    assert properties["enablePurgeProtection"] is True


def test_application_insights_refuses_instrumentation_key_ingestion() -> None:
    properties = resource(INFRA / "app" / "monitoring.bicep", "Microsoft.Insights/components")["properties"]
    assert properties["DisableLocalAuth"] is True


def infra_app_settings() -> dict[str, Any]:
    """The Function App's settings, as the one `appSettings` object of function.bicep declares them."""
    return parse(INFRA / "app" / "function.bicep")["variables"]["appSettings"]["value"]


def test_the_numerai_keys_come_from_key_vault_and_flex_gets_no_worker_runtime() -> None:
    settings = infra_app_settings()
    for name in ("NUMERAI_PUBLIC_ID", "NUMERAI_SECRET_KEY"):
        assert settings[name].startswith("@Microsoft.KeyVault(VaultName="), name
    assert FORBIDDEN_ON_FLEX not in settings


def allowed_values(param: dict[str, Any]) -> list[Any]:
    return next(d["argument"] for d in param["decorators"] if d["type"] == "allowed")


def test_the_python_version_is_one_setting() -> None:
    """PYTHON_VERSION, defaulted in main.parameters.json alone, reaches the runtime via both Bicep files."""
    site = resource(INFRA / "app" / "function.bicep", "Microsoft.Web/sites")
    runtime = site["properties"]["functionAppConfig"]["runtime"]
    assert runtime == {"name": "python", "version": "pythonVersion"}
    main = parse(INFRA / "main.bicep")
    assert main["modules"]["function"]["config"]["params"]["pythonVersion"] == "pythonVersion"
    for tree in (main, parse(INFRA / "app" / "function.bicep")):
        param = tree["parameters"]["pythonVersion"]
        assert param["default"] is None
        assert allowed_values(param) == SUPPORTED_PYTHONS
    value = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]["pythonVersion"]["value"]
    default = re.fullmatch(r"\$\{PYTHON_VERSION=(3\.\d+)\}", value)
    assert default and default.group(1) in SUPPORTED_PYTHONS, value
    # The deploy workflow falls back to the same default; CI tests every supported Python.
    deploy = (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    assert f"PYTHON_VERSION: ${{{{ vars.PYTHON_VERSION || '{default.group(1)}' }}}}" in deploy
    ci = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    assert "python-version: " + json.dumps(SUPPORTED_PYTHONS) in ci
