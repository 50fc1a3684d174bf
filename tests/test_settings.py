"""Settings: defaults, and errors that name the setting at fault."""

from __future__ import annotations

import shutil

import pytest

from shared.errors import SettingsError
from shared.limits import DISK_CAP_MB, default_disk_limit_mb
from shared.report import Execution
from shared.settings import load_settings

KEYS = {
    "NUMERAI_PUBLIC_ID": "public",
    "NUMERAI_SECRET_KEY": "secret",
    "MODELS_STORAGE_ACCOUNT_URL": "https://account.blob.core.windows.net",
}


def test_defaults_apply_when_only_the_keys_are_set() -> None:
    settings = load_settings(KEYS)
    assert settings.data_version == "v5.3"
    assert settings.models_container == "models" and settings.results_container == "results"
    assert settings.batch_rows == 2000 and settings.model_time_limit_seconds == 600
    assert settings.force_resubmit is False and settings.numerai_api_url is None
    assert settings.model_execution is Execution.LOCAL and settings.task_queue == "model-tasks"


def test_queue_mode_and_the_host_storage_key_is_a_secret() -> None:
    settings = load_settings(
        {
            **KEYS,
            "MODEL_EXECUTION": "Queue",
            "TASK_QUEUE": "tasks-1",
            "AzureWebJobsStorage": "AccountName=a;AccountKey=hostkey;",
        }
    )
    assert settings.model_execution is Execution.QUEUE and settings.task_queue == "tasks-1"
    assert "hostkey" in settings.secrets


def test_an_unresolved_key_vault_reference_names_the_setting() -> None:
    reference = "@Microsoft.KeyVault(VaultName=kv-numerai;SecretName=numerai-secret-key)"
    with pytest.raises(
        SettingsError,
        match="NUMERAI_SECRET_KEY is a Key Vault reference that Azure could not resolve",
    ):
        load_settings({**KEYS, "NUMERAI_SECRET_KEY": reference})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"NUMERAI_PUBLIC_ID": ""}, "NUMERAI_PUBLIC_ID is not set; it is required"),
        ({"BATCH_ROWS": "lots"}, "BATCH_ROWS must be a number; it is 'lots'"),
        ({"BATCH_ROWS": "0"}, "BATCH_ROWS must be at least 1"),
        ({"NUMERAI_FORCE_RESUBMIT": "maybe"}, "NUMERAI_FORCE_RESUBMIT must be true or false"),
        ({"NUMERAI_RETRIES": "0"}, "NUMERAI_RETRIES must be at least 1"),
        (
            {"MODEL_EXECUTION": "cluster"},
            "MODEL_EXECUTION must be one of local, queue; it is 'cluster'",
        ),
        ({"TASK_QUEUE": "Model_Tasks"}, "TASK_QUEUE must be a Storage queue name"),
        # 50: its poison queue's poison queue would be 64 characters, one too many.
        ({"TASK_QUEUE": "a" * 50}, "TASK_QUEUE must be a Storage queue name of 3 to 49"),
        ({"TASK_QUEUE": "model--tasks"}, "TASK_QUEUE must be a Storage queue name"),
    ],
)
def test_bad_values_name_the_setting(changes: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings({**KEYS, **changes})


def test_secrets_stay_out_of_the_settings_repr() -> None:
    settings = load_settings(
        {
            **KEYS,
            "MODELS_STORAGE_ACCOUNT_URL": "",
            "MODELS_STORAGE_CONNECTION_STRING": "AccountKey=abc",
        }
    )
    assert "secret" not in repr(settings) and "abc" not in repr(settings)
    assert set(settings.secrets) == {
        "public",
        "secret",
        "abc",
    }  # of the connection string, its key only


def test_a_task_queue_name_of_49_characters_is_the_longest_accepted() -> None:
    assert load_settings({**KEYS, "TASK_QUEUE": "a" * 49}).task_queue == "a" * 49


def test_the_disk_limit_is_the_setting_or_a_share_of_work_dir_s_free_space(tmp_path) -> None:
    assert load_settings({**KEYS, "MODEL_DISK_LIMIT_MB": "5"}).worker_limits().disk_mb == 5
    assert load_settings({**KEYS, "MODEL_DISK_LIMIT_MB": "5"}).worker_limits().disk_default is False
    # Unset: half the free space ÷ the models at a time, at most DISK_CAP_MB each.
    assert default_disk_limit_mb(free_bytes=4000 * 2**20, max_parallel=2) == 1000
    assert default_disk_limit_mb(free_bytes=10**15, max_parallel=1) == DISK_CAP_MB
    unset = load_settings({**KEYS, "WORK_DIR": str(tmp_path / "work")}).worker_limits()
    assert unset.disk_default is True
    free = shutil.disk_usage(tmp_path).free
    assert unset.disk_mb == pytest.approx(default_disk_limit_mb(free, 1), rel=0.01)
    with pytest.raises(SettingsError, match="MODEL_DISK_LIMIT_MB must be at least 1"):
        load_settings({**KEYS, "MODEL_DISK_LIMIT_MB": "0.5"})


def test_every_missing_or_malformed_setting_is_in_one_error() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"BATCH_ROWS": "lots", "MODEL_EXECUTION": "cluster"})
    message = str(raised.value)
    for part in (
        "NUMERAI_PUBLIC_ID is not set",
        "NUMERAI_SECRET_KEY is not set",
        "BATCH_ROWS must be a number; it is 'lots'",
        "MODEL_EXECUTION must be one of local, queue",
        "set exactly one of MODELS_STORAGE_CONNECTION_STRING",
    ):
        assert part in message
    assert message.startswith("5 settings need fixing")
