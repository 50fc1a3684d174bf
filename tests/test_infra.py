"""Offline checks of the Azure deployment in infra/: no Bicep compiler and no Azure.

Every Bicep file must parse; checkov (in its own venv, `.venv-infra`, made by
`make setup`) must find no failed check, and every check skipped in the Bicep
must say why; the settings that keep secrets and data private must be set as
written, since checkov does not test all of them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
CHECKOV = ROOT / ".venv-infra" / "bin" / "checkov"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# Checks that pass today: 25 (the containers are one looped resource; Key Vault purge
# protection is opt-in and its two checks skipped). A scan that quietly finds fewer
# resources fails here.
MIN_PASSED_CHECKS = 22
MIN_JUSTIFICATION_LENGTH = 20

# The Pythons requirements.txt is pinned for (Numerai's hosted runner's py3.11, py3.12 and
# py3.13 locks).
SUPPORTED_PYTHONS = ["3.11", "3.12", "3.13"]

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
    created = [
        r
        for r in parse(path)["resources"].values()
        if r["type"] == resource_type and not r["existing"]
    ]
    assert len(created) == 1, f"{path.name}: expected one {resource_type}, found {len(created)}"
    return created[0]["config"]


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, Any]:
    """checkov's JSON report on infra/ (without --quiet, which drops passed and skipped checks)."""
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV.relative_to(ROOT)} is missing: run make setup")
    completed = subprocess.run(
        [
            str(CHECKOV),
            "--directory",
            str(INFRA),
            "--framework",
            "bicep",
            "--output",
            "json",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
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
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for c in checkov_report["results"]["failed_checks"]
    ]
    assert failed == []
    assert summary["parsing_errors"] == 0
    assert summary["passed"] >= MIN_PASSED_CHECKS, summary


def test_every_skipped_check_says_why(checkov_report: dict[str, Any]) -> None:
    unexplained = [
        f"{c['check_id']} {c['resource']} ({c['file_path']})"
        for c in checkov_report["results"]["skipped_checks"]
        if len(c["check_result"].get("suppress_comment", "").strip()) < MIN_JUSTIFICATION_LENGTH
        or c["check_result"]["suppress_comment"] == "No comment provided"
    ]
    assert unexplained == []


def test_storage_accepts_only_entra_id_over_tls_1_2() -> None:
    properties = resource(INFRA / "app" / "storage.bicep", "Microsoft.Storage/storageAccounts")[
        "properties"
    ]
    assert properties["allowSharedKeyAccess"] is False
    assert properties["allowBlobPublicAccess"] is False
    assert properties["minimumTlsVersion"] == "TLS1_2"
    assert properties["supportsHttpsTrafficOnly"] is True


def test_key_vault_uses_rbac_and_keeps_deleted_secrets() -> None:
    properties = resource(INFRA / "app" / "keyvault.bicep", "Microsoft.KeyVault/vaults")[
        "properties"
    ]
    assert properties["enableRbacAuthorization"] is True
    assert properties["enableSoftDelete"] is True


def test_key_vault_purge_protection_is_opt_in_so_azd_down_purge_and_redeploy_work() -> None:
    """The vault's name follows the environment name: purge protection on by default would
    block `azd down --purge` and a redeploy under that name for 90 days."""
    keyvault = parse(INFRA / "app" / "keyvault.bicep")
    properties = resource(INFRA / "app" / "keyvault.bicep", "Microsoft.KeyVault/vaults")[
        "properties"
    ]
    # The API accepts no `false` once on, so off is null.
    assert properties["enablePurgeProtection"] == {
        "operator": {
            "type": "conditional",
            "operands": {"condition": "purgeProtection", "true_value": True, "false_value": None},
        }
    }
    assert keyvault["parameters"]["purgeProtection"]["default"] is False
    main = parse(INFRA / "main.bicep")
    assert main["parameters"]["keyVaultPurgeProtection"]["default"] is False
    assert (
        main["modules"]["keyVault"]["config"]["params"]["purgeProtection"]
        == "keyVaultPurgeProtection"
    )
    assert parameter_default("keyVaultPurgeProtection", "KEY_VAULT_PURGE_PROTECTION") == "false"


def test_application_insights_refuses_instrumentation_key_ingestion() -> None:
    properties = resource(INFRA / "app" / "monitoring.bicep", "Microsoft.Insights/components")[
        "properties"
    ]
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
    value = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]["pythonVersion"][
        "value"
    ]
    default = re.fullmatch(r"\$\{PYTHON_VERSION=(3\.\d+)\}", value)
    assert default and default.group(1) in SUPPORTED_PYTHONS, value
    # The deploy workflow falls back to the same default; CI tests every supported Python.
    deploy = (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    assert f"PYTHON_VERSION: ${{{{ vars.PYTHON_VERSION || '{default.group(1)}' }}}}" in deploy
    ci = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    assert "python-version: " + json.dumps(SUPPORTED_PYTHONS) in ci


# ===== Flex Consumption deployment facts (issue 10) =====
# Sources are cited in infra/main.bicep next to each value.

FLEX_PARAM_FILES = [INFRA / "main.bicep", INFRA / "app" / "function.bicep"]
HOOKS = INFRA / "hooks"


def decorator(param: dict[str, Any], kind: str) -> Any:
    """The argument of a parameter's decorator (`min_value`, `allowed`, ...); None if absent."""
    return next((d["argument"] for d in param["decorators"] if d["type"] == kind), None)


def parameter_default(name: str, variable: str) -> str | None:
    """The default main.parameters.json gives azd's VARIABLE for Bicep's NAME; None if none."""
    value = json.loads((INFRA / "main.parameters.json").read_text())["parameters"][name]["value"]
    match = re.fullmatch(r"\$\{" + variable + r"(?:=(.*))?\}", value)
    assert match, f"main.parameters.json maps {name} to {value!r}, not to {variable}"
    return match.group(1)


@pytest.mark.parametrize("path", FLEX_PARAM_FILES, ids=lambda p: p.name)
def test_maximum_instance_count_stays_within_flex_consumptions_bounds(path: Path) -> None:
    param = parse(path)["parameters"]["maximumInstanceCount"]
    assert (decorator(param, "min_value"), decorator(param, "max_value")) == (40, 1000)
    assert param["default"] == 100


def test_azd_passes_a_maximum_instance_count_flex_accepts() -> None:
    assert parameter_default("maximumInstanceCount", "MAXIMUM_INSTANCE_COUNT") == "100"


@pytest.mark.parametrize("path", FLEX_PARAM_FILES, ids=lambda p: p.name)
def test_instance_memory_offers_only_sizes_that_can_import_tensorflow(path: Path) -> None:
    """512 MB is Flex's smallest size, but `import tensorflow` alone takes about 670 MiB."""
    param = parse(path)["parameters"]["instanceMemoryMB"]
    assert decorator(param, "allowed") == [2048, 4096]
    assert param["default"] == 2048
    assert parameter_default("instanceMemoryMB", "INSTANCE_MEMORY_MB") == "2048"


def test_location_is_limited_to_regions_that_offer_flex_consumption() -> None:
    param = parse(INFRA / "main.bicep")["parameters"]["location"]
    regions = decorator(param, "allowed")
    assert regions == sorted(set(regions)) and all(re.fullmatch(r"[a-z0-9]+", r) for r in regions)
    assert {"eastus", "eastus2", "westeurope", "northeurope", "uksouth", "australiaeast"} <= set(
        regions
    )
    # Not in Microsoft's Flex Consumption templates' list; eastus2euap is early-access only.
    assert not {"westindia", "australiacentral", "canadaeast", "eastus2euap"} & set(regions)
    assert decorator(param, "metadata") == {"azd": {"type": "location"}}


# --- RBAC: the README's table of roles is what rbac.bicep grants ---------------

PRINCIPALS = {"identityPrincipalId": "app identity", "deployerPrincipalId": "deploying user"}
ACCOUNT_PARAMS = {
    "hostStorageAccountName": "host storage account",
    "dataStorageAccountName": "data storage account",
}


def rbac_scope(tree: dict[str, Any], symbol: str) -> str:
    """The README's words for an `existing` resource of rbac.bicep, found by following its
    parents: a container names its data account, which must be the data account."""
    config = tree["resources"][symbol]["config"]
    kind = tree["resources"][symbol]["type"]
    if kind == "Microsoft.Storage/storageAccounts":
        return ACCOUNT_PARAMS[config["name"]]
    if kind == "Microsoft.Storage/storageAccounts/blobServices/containers":
        account = rbac_scope(tree, tree["resources"][config["parent"]]["config"]["parent"])
        assert account == "data storage account", f"{symbol} is in the {account}"
        return f"`{config['name'].removesuffix('ContainerName')}` container"
    return {
        "Microsoft.KeyVault/vaults": "Key Vault",
        "Microsoft.Insights/components": "Application Insights",
    }[kind]


def role_name(expression: dict[str, Any]) -> str:
    """`roles.storageBlobDataOwner` as the built-in role's name, Storage Blob Data Owner."""
    key = expression["function"]["parameters"]["resource_name_1"]["operator"]["operands"][
        "operand_2"
    ]
    words = re.sub(r"(?=[A-Z])", " ", key)
    return words[0].upper() + words[1:]


def rbac_grants() -> set[tuple[str, str, str]]:
    """(principal, role, scope) for every role assignment rbac.bicep makes."""
    tree = parse(INFRA / "app" / "rbac.bicep")
    grants = set()
    for created in tree["resources"].values():
        if created["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        config = created["config"].get("config", created["config"])  # conditional ones nest
        properties = config["properties"]
        grants.add(
            (
                PRINCIPALS[properties["principalId"]],
                role_name(properties["roleDefinitionId"]),
                rbac_scope(tree, config["scope"]),
            )
        )
    return grants


def readme_role_table() -> set[tuple[str, str, str]]:
    section = (
        (ROOT / "README.md").read_text().split("## Deploy to Azure", 1)[1].split("\n## ", 1)[0]
    )
    rows = re.findall(
        r"^\| (app identity|deploying user) \| (.+?) \| (.+?) \|$", section, flags=re.MULTILINE
    )
    return set(rows)


def test_the_readmes_table_of_roles_is_what_rbac_bicep_grants() -> None:
    assert len(readme_role_table()) >= 10
    assert readme_role_table() == rbac_grants()


def test_the_app_identity_can_only_read_the_models() -> None:
    """The host's Storage Blob Data Owner is on the host's account; on the data account the
    identity has container roles only: read on models, write on results."""
    on_data = {
        (role, scope)
        for who, role, scope in rbac_grants()
        if who == "app identity" and ("container" in scope or scope == "data storage account")
    }
    assert on_data == {
        ("Storage Blob Data Reader", "`models` container"),
        ("Storage Blob Data Contributor", "`results` container"),
    }


def test_main_bicep_wires_the_host_account_to_the_host_and_the_data_account_to_the_app() -> None:
    main = parse(INFRA / "main.bicep")
    assert (
        main["variables"]["modelsContainerName"]["value"],
        main["variables"]["resultsContainerName"]["value"],
    ) == ("models", "results")
    for module in ("rbac", "function"):
        params = main["modules"][module]["config"]["params"]
        assert (
            params["hostStorageAccountName"]["operator"]["operands"]["operand_1"] == "hostStorage"
        )
        assert (
            params["dataStorageAccountName"]["operator"]["operands"]["operand_1"] == "dataStorage"
        )
    function = parse(INFRA / "app" / "function.bicep")
    assert function["resources"]["storage"]["config"]["name"] == "hostStorageAccountName"
    assert function["resources"]["dataStorage"]["config"]["name"] == "dataStorageAccountName"
    settings = infra_app_settings()
    assert (
        settings["MODELS_STORAGE_ACCOUNT_URL"]["operator"]["operands"]["operand_1"] == "dataStorage"
    )
    assert (
        settings["AzureWebJobsStorage__blobServiceUri"]["operator"]["operands"]["operand_1"]
        == "storage"
    )


# --- The missed-run alert's weekdays (infra/hooks/schedule_weekdays.py) -------


def schedule_weekdays(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the preprovision hook's script as azd does, in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, str(HOOKS / "schedule_weekdays.py"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": os.environ["PATH"], **(env or {})},
    )


@pytest.mark.parametrize(
    ("weekday_field", "expected"),
    [
        ("6", "6"),
        ("Sat", "6"),
        ("sat", "6"),
        ("SATURDAY", "6"),
        ("Satur", "6"),
        ("0", "0"),
        ("Sun", "0"),
        ("2-6", "2,3,4,5,6"),
        ("Tue-Sat", "2,3,4,5,6"),
        ("tue-SAT", "2,3,4,5,6"),
        ("2-Sat", "2,3,4,5,6"),
        ("6-2", "2,3,4,5,6"),  # NCrontab swaps a backwards range
        ("Sun,Wed,6", "0,3,6"),
        ("1-2,Fri", "1,2,5"),
        ("6,6", "6"),
        ("*", "0,1,2,3,4,5,6"),
        ("*/2", "0,2,4,6"),
        ("1-5/2", "1,3,5"),
        ("3/2", "3,5"),
    ],
)
def test_the_alert_gets_the_weekdays_the_timer_fires_on(weekday_field: str, expected: str) -> None:
    done = schedule_weekdays(f"0 15 12 * * {weekday_field}")
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, expected, "")


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        ("0 15 12 * * 7", "weekday 7 is out of range"),
        ("0 15 12 * * Xyz", "'Xyz' is not a weekday"),
        ("0 15 12 * * Sa7", "'Sa7' is not a weekday"),
        ("0 15 12 * * 2-", "'' is not a weekday"),
        ("0 15 12 * * 1,,2", "'' is not a weekday"),
        ("0 15 12 * * */0", "no positive whole step"),
        ("0 15 12 * Sat", "needs six fields"),
        ("0 15 12 * *  6", "needs six fields"),
        ("*/30 15 12 * * 6", "the second field must be one number from 0 to 59"),
        ("0 61 12 * * 6", "the minute field must use numbers from 0 to 59"),
        ("0 15 24 * * 6", "the hour field must use numbers from 0 to 23"),
        ("0 */0 12 * * 6", "minute item '*/0' has no positive whole step"),
        ("0 15 12 1 * 6", "day-of-month and month fields must be '*'"),
    ],
)
def test_a_schedule_the_alert_cannot_follow_stops_provisioning_with_the_reason(
    schedule: str, reason: str
) -> None:
    done = schedule_weekdays(schedule)
    assert done.returncode == 2 and done.stdout == ""
    assert f"NUMERAI_SCHEDULE {schedule!r} refused: " in done.stderr and reason in done.stderr, (
        done.stderr
    )


@pytest.mark.parametrize(
    ("schedule", "first"),
    [
        ("0 */10 12-13 * * 6", "12:00:00"),
        ("0 15 12 * * 6", "12:15:00"),
        ("30 0,30 13,12 * * 2-6", "12:00:30"),
        ("0 5/20 9-7 * * 6", "07:05:00"),
        ("0 * * * * *", "00:00:00"),
    ],
)
def test_the_alert_gets_the_first_firing_of_a_due_day(schedule: str, first: str) -> None:
    done = schedule_weekdays("--first-run", schedule)
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, first, "")


def test_without_an_argument_the_script_reads_the_azd_environment_then_the_default() -> None:
    assert (
        schedule_weekdays(env={"NUMERAI_SCHEDULE": "0 0 13 * * Mon-Wed"}).stdout.strip() == "1,2,3"
    )
    default = parameter_default("schedule", "NUMERAI_SCHEDULE")
    assert default == parse(INFRA / "main.bicep")["parameters"]["schedule"]["default"]
    assert schedule_weekdays().stdout.strip() == schedule_weekdays(default).stdout.strip() == "6"


def test_the_weekdays_reach_the_alert_from_the_hook() -> None:
    """azd sets NUMERAI_SCHEDULE_WEEKDAYS before provisioning (azure.yaml's preprovision hook,
    and the deploy workflow); the query uses them."""
    main = parse(INFRA / "main.bicep")
    assert main["modules"]["alerts"]["config"]["params"]["scheduleWeekdays"] == "scheduleWeekdays"
    alerts = (INFRA / "app" / "alerts.bicep").read_text()
    assert (
        "let runDays = dynamic([{weekdays}]);" in alerts
        and "'{weekdays}', scheduleWeekdays)" in alerts
    )
    assert "fields[5]" not in alerts
    hook = "weekdays=$(python3 infra/hooks/schedule_weekdays.py) && azd env set NUMERAI_SCHEDULE_WEEKDAYS"
    assert hook in (ROOT / "azure.yaml").read_text()
    deploy = (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    assert "weekdays=$(python3 infra/hooks/schedule_weekdays.py)" in deploy
    # And the first firing of a due day, the same way.
    assert main["modules"]["alerts"]["config"]["params"]["scheduleFirstRun"] == "scheduleFirstRun"
    assert (
        'let runTime = totimespan("{firstRun}");' in alerts
        and "'{firstRun}', scheduleFirstRun)" in alerts
    )
    assert (
        "first=$(python3 infra/hooks/schedule_weekdays.py --first-run) && azd env set "
        "NUMERAI_SCHEDULE_FIRST_RUN" in (ROOT / "azure.yaml").read_text()
    )
    assert "first=$(python3 infra/hooks/schedule_weekdays.py --first-run)" in deploy


def parameters_azd_would_prompt_for() -> list[str]:
    """What `azd up` asks for before any hook runs (Azure/azure-dev#5806: parameters are
    checked before preprovision): a Bicep parameter with no default whose value in
    main.parameters.json is an azd variable with no `=default`. azd fills the three
    it always knows (the environment's name, location and the signed-in principal)."""
    known = {"AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_PRINCIPAL_ID"}
    bicep = parse(INFRA / "main.bicep")["parameters"]
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    prompted = []
    for name, param in bicep.items():
        value = values.get(name, {}).get("value")
        variable = re.fullmatch(r"\$\{(\w+)\}", value) if isinstance(value, str) else None
        if param["default"] is None and (value is None or (variable and variable[1] not in known)):
            prompted.append(name)
    return prompted


def test_a_first_azd_up_asks_for_nothing() -> None:
    assert parameters_azd_would_prompt_for() == []


def test_the_schedule_parameters_default_to_what_the_hook_computes_for_the_default_schedule() -> (
    None
):
    """The defaults only get `azd up` past its parameter check; the hook then sets the real
    values, so the two must agree for the default schedule."""
    main = parse(INFRA / "main.bicep")["parameters"]
    weekdays = schedule_weekdays().stdout.strip()
    first = schedule_weekdays("--first-run").stdout.strip()
    assert main["scheduleWeekdays"]["default"] == weekdays == "6"
    assert main["scheduleFirstRun"]["default"] == first == "12:00:00"
    assert parameter_default("scheduleWeekdays", "NUMERAI_SCHEDULE_WEEKDAYS") == weekdays
    assert parameter_default("scheduleFirstRun", "NUMERAI_SCHEDULE_FIRST_RUN") == first


# --- The Numerai keys before the first run (infra/hooks/postprovision.sh) -----


def run_postprovision(
    tmp_path: Path, secrets_in_vault: str, unresolved: str = "0"
) -> subprocess.CompletedProcess[str]:
    """The hook, non-interactive (as in CI), with an `az` on PATH that answers from a script:
    the secret names the vault lists, and how many references the app has not resolved."""
    az = tmp_path / "az"
    az.write_text(f"""#!/bin/sh
echo "$*" >> "{tmp_path}/az.log"
case "$*" in
  "keyvault secret list"*) printf '{secrets_in_vault}' ;;
  "rest --method get"*) echo {unresolved} ;;
  "rest --method post"*) ;;
  *) exit 99 ;;
esac
""")
    az.chmod(0o755)
    env = {
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "AZURE_KEY_VAULT_NAME": "kv-test",
        "AZURE_FUNCTION_APP_ID": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/app",
        "HOOK_TRIES": "2",
        "HOOK_PAUSE_SECONDS": "0",
    }
    return subprocess.run(
        ["sh", str(HOOKS / "postprovision.sh")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_postprovision_refuses_to_go_on_without_a_numerai_key_when_it_cannot_ask(
    tmp_path: Path,
) -> None:
    done = run_postprovision(tmp_path, "numerai-public-id\\n")
    assert done.returncode == 1
    assert "Key Vault kv-test has no secret numerai-secret-key" in done.stderr
    assert "az keyvault secret set --vault-name kv-test --name numerai-secret-key" in done.stderr


def test_postprovision_refreshes_the_key_vault_references_and_waits_for_them(
    tmp_path: Path,
) -> None:
    done = run_postprovision(tmp_path, "numerai-public-id\\nnumerai-secret-key\\n")
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "az.log").read_text()
    assert (
        "rest --method post --url https://management.azure.com/subscriptions/s/resourceGroups/rg/"
        "providers/Microsoft.Web/sites/app/config/configreferences/appsettings/refresh"
        "?api-version=2022-03-01"
    ) in calls
    still_unresolved = run_postprovision(
        tmp_path, "numerai-public-id\\nnumerai-secret-key\\n", unresolved="1"
    )
    assert still_unresolved.returncode == 1
    assert "has not resolved its Key Vault references" in still_unresolved.stderr


# ===== Queue mode in Azure (issue 11): host.json, the queues, their roles, scaling, the alert =====
# Sources are cited in docs/queue-mode.md ("In Azure: queues, host.json and scaling") and in infra/.

HOST_JSON = ROOT / "host.json"
MODEL_TASK_FUNCTION = "model_task"


def timespan_seconds(value: str) -> float:
    """host.json's `hh:mm:ss[.fff]` TimeSpan in seconds."""
    hours, minutes, seconds = value.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def test_host_json_gives_each_instance_one_model_at_a_time() -> None:
    """A queue function runs at most batchSize + newBatchThreshold messages at once per
    instance, and target-based scaling asks for queue length / batchSize instances."""
    queues = json.loads(HOST_JSON.read_text())["extensions"]["queues"]
    assert queues["batchSize"] + queues["newBatchThreshold"] == 1
    assert queues["batchSize"] == 1


def test_host_json_retries_a_failed_model_task_twice_after_a_pause_then_poisons_it() -> None:
    queues = json.loads(HOST_JSON.read_text())["extensions"]["queues"]
    assert queues["maxDequeueCount"] == 3
    assert timespan_seconds(queues["visibilityTimeout"]) == 30
    # At least the documented floor of 100 ms, and well below the one-minute default.
    assert 0.1 <= timespan_seconds(queues["maxPollingInterval"]) <= 5
    # The extension's default, written down because the app's sender must encode alike.
    assert queues["messageEncoding"] == "base64"
    # A task that keeps failing uses all its tries inside one function timeout's worth of
    # waiting: the retries' pauses are small next to the 30-minute functionTimeout.
    timeout = timespan_seconds(json.loads(HOST_JSON.read_text())["functionTimeout"])
    assert (queues["maxDequeueCount"] - 1) * timespan_seconds(
        queues["visibilityTimeout"]
    ) < timeout / 10


def test_the_host_account_holds_the_task_queue_and_its_poison_queue() -> None:
    """The trigger's connection is AzureWebJobsStorage: the queues live in the host's account,
    named as the host names a poison queue; the data account gets none."""
    modules = parse(INFRA / "main.bicep")["modules"]
    assert modules["hostStorage"]["config"]["params"]["queueNames"] == [
        "taskQueueName",
        "${taskQueueName}-poison",
    ]
    assert "queueNames" not in modules["dataStorage"]["config"]["params"]
    storage = parse(INFRA / "app" / "storage.bicep")
    queues = storage["resources"]["queues"]["config"]
    assert queues["loop_type"]["detail"] == {"item_name": "queueName", "array_name": "queueNames"}
    assert storage["resources"][queues["config"]["parent"]]["config"]["parent"] == "storage"
    assert storage["parameters"]["queueNames"]["default"] == []


def test_the_task_queues_name_leaves_room_for_the_poison_queues_own_poison_queue() -> None:
    """Queue names are 3 to 63 characters; poison_task's poison queue adds `-poison-poison`."""
    param = parse(INFRA / "main.bicep")["parameters"]["taskQueueName"]
    assert (decorator(param, "min_length"), decorator(param, "max_length")) == (
        3,
        63 - len("-poison-poison"),
    )
    assert param["default"] == parameter_default("taskQueueName", "TASK_QUEUE") == "model-tasks"


def test_the_identity_may_send_receive_and_delete_queue_messages_on_the_host_account() -> None:
    assert (
        "app identity",
        "Storage Queue Data Contributor",
        "host storage account",
    ) in rbac_grants()


def test_model_execution_and_task_queue_reach_the_app_from_azd() -> None:
    main = parse(INFRA / "main.bicep")
    function = parse(INFRA / "app" / "function.bicep")
    for tree in (main, function):
        assert decorator(tree["parameters"]["modelExecution"], "allowed") == ["local", "queue"]
        assert tree["parameters"]["modelExecution"]["default"] == "local"
    assert parameter_default("modelExecution", "MODEL_EXECUTION") == "local"
    params = main["modules"]["function"]["config"]["params"]
    assert (params["modelExecution"], params["taskQueueName"]) == (
        "modelExecution",
        "taskQueueName",
    )
    settings = infra_app_settings()
    assert (settings["MODEL_EXECUTION"], settings["TASK_QUEUE"]) == (
        "modelExecution",
        "taskQueueName",
    )
    # The sender and the trigger find the queue service through the host's identity-based settings.
    assert (
        settings["AzureWebJobsStorage__queueServiceUri"]["operator"]["operands"]["operand_1"]
        == "storage"
    )
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"


def test_always_ready_instances_of_the_model_task_are_opt_in() -> None:
    """Flex keeps always-ready instances per `function:<name>`, billed while idle: none by default."""
    function = parse(INFRA / "app" / "function.bicep")
    assert function["variables"]["modelTaskFunctionName"]["value"] == MODEL_TASK_FUNCTION
    site = resource(INFRA / "app" / "function.bicep", "Microsoft.Web/sites")
    scale = site["properties"]["functionAppConfig"]["scaleAndConcurrency"]
    assert scale["alwaysReady"] == {
        "operator": {
            "type": "conditional",
            "operands": {
                "condition": {
                    "operator": {
                        "type": "greater_than",
                        "operands": {"operand_1": "modelTaskAlwaysReady", "operand_2": 0},
                    }
                },
                "true_value": [
                    {
                        "name": "function:${modelTaskFunctionName}",
                        "instanceCount": "modelTaskAlwaysReady",
                    }
                ],
                "false_value": [],
            },
        }
    }
    main = parse(INFRA / "main.bicep")
    for tree in (main, function):
        param = tree["parameters"]["modelTaskAlwaysReady"]
        assert param["default"] == 0
        # Never above Flex's lowest maximumInstanceCount, hence never above the app's maximum.
        assert (decorator(param, "min_value"), decorator(param, "max_value")) == (0, 40)
    assert parameter_default("modelTaskAlwaysReady", "MODEL_TASK_ALWAYS_READY") == "0"
    assert (
        main["modules"]["function"]["config"]["params"]["modelTaskAlwaysReady"]
        == "modelTaskAlwaysReady"
    )


def test_the_missed_round_alert_reads_the_records_the_app_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The alert pages for what did not heal: a round closed with a model missed, or a round's
    last scheduled run failed. It reads the records record_run logs, whose `extra` fields
    azure-monitor-opentelemetry exports as customDimensions."""
    from shared.report import Mode, ModelReport, RunReport
    from shared.telemetry import record_run

    report = RunReport(
        run_id="r1",
        mode=Mode.SCHEDULED,
        started_at="2026-11-27T12:15:00Z",
        round_number=1200,
        models=[ModelReport("m")],
    )
    report.models[0].miss("model 'm': round 1200 closed for staking")
    report.finish()
    with caplog.at_level(logging.INFO, logger="shared"):
        record_run(report, 1.0)
    run = next(r for r in caplog.records if hasattr(r, "run_status"))
    assert (run.levelno, run.run_status, run.mode, run.round) == (
        logging.ERROR,
        "failed",
        "scheduled",
        1200,
    )
    missed = next(r for r in caplog.records if hasattr(r, "round_missed"))
    assert (missed.levelno, missed.round_missed, missed.models_missed) == (
        logging.ERROR,
        "true",
        "m",
    )

    alerts = parse(INFRA / "app" / "alerts.bicep")
    query = alerts["variables"]["roundMissedQuery"]["value"]
    assert query.lstrip().startswith("union")
    assert 'traces\n    | where tostring(customDimensions.round_missed) == "true"' in query
    assert 'tostring(customDimensions.mode) == "scheduled"' in query and "by round" in query
    assert "lastFailed < ago({heal}m)" in query
    rule = next(
        r["config"]
        for r in alerts["resources"].values()
        if r["type"] == "Microsoft.Insights/scheduledQueryRules"
        and r["config"]["name"] == "alert-round-missed"
    )
    criterion = rule["properties"]["criteria"]["allOf"][0]
    assert criterion["query"]["function"]["parameters"]["original_string"] == "roundMissedQuery"
    assert (criterion["operator"], criterion["threshold"]) == ("GreaterThan", 0)
    assert alerts["variables"]["functionName"]["value"] == "scheduled_submission"


def test_the_missed_run_alert_reads_success_whatever_its_column_type() -> None:
    """`success` is a bool in one Application Insights schema and a "True"/"False" string in
    another; `success == true` would never match the string, and the alert would fire every
    week for runs that succeeded."""
    alerts = (INFRA / "app" / "alerts.bicep").read_text()
    assert 'tostring(success) =~ "true"' in alerts
    assert not re.search(r"\bsuccess\s*==", alerts)


def test_every_log_alert_skips_query_validation_against_a_component_created_with_it() -> None:
    rules = [
        config
        for config in parse(INFRA / "app" / "alerts.bicep")["resources"].values()
        if config["type"] == "Microsoft.Insights/scheduledQueryRules"
    ]
    assert len(rules) == 2
    assert all(rule["config"]["properties"]["skipQueryValidation"] is True for rule in rules)


def test_the_deploy_workflow_deploys_only_what_ci_passed() -> None:
    deploy = (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    trigger = deploy[deploy.index("\non:") : deploy.index("\npermissions:")]
    assert "push:" not in trigger, "a push would deploy beside CI, not after it"
    assert "workflow_run:" in trigger and "workflows: [CI]" in trigger
    assert "branches: [main]" in trigger
    assert "name: CI\n" in (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    assert "github.event.workflow_run.conclusion == 'success'" in deploy
    assert "ref: ${{ github.event.workflow_run.head_sha || github.sha }}" in deploy


# --- The package's Python is the app's (infra/hooks/package_python.py) ------


def package_python(
    *args: str, env: dict[str, str], cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HOOKS / "package_python.py"), *args],
        env={"PATH": os.environ["PATH"], **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture()
def package_hook() -> Any:
    """The hook's module, to run its check against a record in a test's folder."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("package_python", HOOKS / "package_python.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_package_is_built_for_the_python_the_bicep_deploys() -> None:
    """prepackage builds for PYTHON_VERSION, or the default main.bicep gets without it."""
    assert package_python("target", env={}).stdout.strip() == parameter_default(
        "pythonVersion", "PYTHON_VERSION"
    )
    assert package_python("target", env={"PYTHON_VERSION": "3.12"}).stdout.strip() == "3.12"
    main = parse(INFRA / "main.bicep")
    assert main["outputs"]["AZURE_FUNCTION_PYTHON_VERSION"]["value"] == "pythonVersion"
    hooks = (ROOT / "azure.yaml").read_text()
    assert (
        'target=$(python3 infra/hooks/package_python.py target) && python3 -m devkit.package --python "$target"'
        in hooks
    )
    assert "run: python3 infra/hooks/package_python.py check" in hooks


@pytest.mark.parametrize(
    ("built", "env", "problem"),
    [
        ("3.11", {"AZURE_FUNCTION_PYTHON_VERSION": "3.11"}, None),
        (
            "3.12",
            {"AZURE_FUNCTION_PYTHON_VERSION": "3.11", "PYTHON_VERSION": "3.12"},
            "the package was built for Python 3.12, and the Function App runs Python 3.11: its "
            "native wheels would fail to import there. Run azd provision (to move the app to "
            "Python 3.12), or azd env set PYTHON_VERSION 3.11 and deploy again",
        ),
        (
            "3.11",
            {},
            "the azd environment has no AZURE_FUNCTION_PYTHON_VERSION (the Function App's "
            "Python, an output of infra/main.bicep): run azd provision, then deploy again",
        ),
        (None, {"AZURE_FUNCTION_PYTHON_VERSION": "3.11"}, "no package has been built"),
    ],
    ids=["same", "azd env set PYTHON_VERSION then deploy", "never provisioned", "never built"],
)
def test_predeploy_refuses_a_package_of_another_python_before_upload(
    package_hook: Any, tmp_path: Path, built: str | None, env: dict[str, str], problem: str | None
) -> None:
    record = tmp_path / "built.json"
    if built is not None:
        record.write_text(json.dumps({"python": built, "formats": ["lightgbm"]}))
    found = package_hook.check(env, record)
    assert found == problem if problem is None or built is not None else problem in found


def test_predeploy_exits_non_zero_with_the_reason() -> None:
    done = package_python("check", env={})
    assert done.returncode == 1
    assert "error: the azd environment has no AZURE_FUNCTION_PYTHON_VERSION" in done.stderr
