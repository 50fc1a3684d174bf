"""Settings: defaults, and errors that name the setting at fault."""

from __future__ import annotations

import pytest

from shared.errors import SettingsError
from shared.settings import load_settings

KEYS = {"NUMERAI_PUBLIC_ID": "public", "NUMERAI_SECRET_KEY": "secret"}


def test_defaults_apply_when_only_the_keys_are_set() -> None:
    settings = load_settings(KEYS)
    assert settings.data_version == "v5.3"
    assert settings.models_container == "models" and settings.results_container == "results"
    assert settings.batch_rows == 2000 and settings.model_time_limit_seconds == 600
    assert settings.force_resubmit is False and settings.numerai_api_url is None


def test_an_unresolved_key_vault_reference_names_the_setting() -> None:
    reference = "@Microsoft.KeyVault(VaultName=kv-numerai;SecretName=numerai-secret-key)"
    with pytest.raises(SettingsError, match="NUMERAI_SECRET_KEY is a Key Vault reference that Azure could not resolve"):
        load_settings({**KEYS, "NUMERAI_SECRET_KEY": reference})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"NUMERAI_PUBLIC_ID": ""}, "NUMERAI_PUBLIC_ID is not set; it is required"),
        ({"BATCH_ROWS": "lots"}, "BATCH_ROWS must be a number; it is 'lots'"),
        ({"BATCH_ROWS": "0"}, "BATCH_ROWS must be at least 1"),
        ({"NUMERAI_FORCE_RESUBMIT": "maybe"}, "NUMERAI_FORCE_RESUBMIT must be true or false"),
        ({"NUMERAI_RETRIES": "0"}, "NUMERAI_RETRIES must be at least 1"),
    ],
)
def test_bad_values_name_the_setting(changes: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings({**KEYS, **changes})


def test_secrets_stay_out_of_the_settings_repr() -> None:
    settings = load_settings({**KEYS, "MODELS_STORAGE_CONNECTION_STRING": "AccountKey=abc"})
    assert "secret" not in repr(settings) and "abc" not in repr(settings)
    assert set(settings.secrets) == {"public", "secret", "abc"}  # of the connection string, its key only
