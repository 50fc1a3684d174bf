"""The manifest is validated on load, with errors that name the file, the entry and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.errors import ManifestError
from shared.manifest import ModelFormat, OutputTransform, load_manifest, parse_manifest


def entry(**fields: object) -> dict:
    base = {"name": "my_model", "file": "m.keras", "format": "keras", "features": "medium"}
    base.update(fields)
    return base


def parse(*entries: dict) -> object:
    return parse_manifest(json.dumps({"models": list(entries)}), "models.json")


def test_a_valid_manifest_gets_its_defaults() -> None:
    manifest = parse(entry(), entry(name="other", features=["feature_a", "feature_b"], output="raw"))
    first, second = manifest.models
    assert first.format is ModelFormat.KERAS
    assert first.output is OutputTransform.RANK
    assert first.fill_missing == 2.0
    assert first.trust_pickle is False
    assert second.features == ["feature_a", "feature_b"]
    assert second.output is OutputTransform.RAW


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        ({"format": "pytorch"}, "format", "'keras', 'lightgbm', 'onnx', 'numerai_pickle', 'sklearn', 'xgboost' or 'catboost'"),
        ({"name": "My Model"}, "name", "not a Numerai model name"),
        ({"file": "../secrets.txt"}, "file", "relative to the manifest"),
        ({"features": []}, "features", "the feature list is empty"),
        ({"features": ["a", "b", "a"]}, "features", "features listed twice: a"),
        ({"output": "sigmoid"}, "output", "'rank' or 'raw'"),
        ({"colour": "blue"}, "colour", "Extra inputs are not permitted"),
    ],
)
def test_errors_name_the_file_entry_and_field(bad: dict, field: str, words: str) -> None:
    with pytest.raises(ManifestError) as error:
        parse(entry(name="fine"), entry(**bad))
    message = str(error.value)
    assert message.startswith("models.json: model #2")
    assert f"field '{field}'" in message
    assert words in message


def test_a_missing_field_is_named() -> None:
    raw = entry()
    del raw["file"]
    with pytest.raises(ManifestError, match=r"model #1 \('my_model'\): field 'file': Field required"):
        parse(raw)


def test_features_are_required_only_where_the_file_records_no_names() -> None:
    raw = entry()
    del raw["features"]
    with pytest.raises(ManifestError, match=r"model #1 \('my_model'\): field 'features' is required for format "
                                            "'keras', whose files do not record feature names"):
        parse(raw)
    for fmt in ("lightgbm", "xgboost", "catboost", "sklearn"):
        extra = {"trust_pickle": True} if fmt == "sklearn" else {}
        assert parse({"name": "m", "file": "m.bin", "format": fmt, **extra}).models[0].features is None


def test_pickle_fields_apply_only_to_pickles() -> None:
    with pytest.raises(ManifestError, match="trust_pickle only applies to formats 'numerai_pickle' and 'sklearn'"):
        parse(entry(trust_pickle=True))
    with pytest.raises(ManifestError, match="method only applies to format 'sklearn'"):
        parse(entry(method="predict_proba"))


def test_upload_pickles_default_to_the_hosted_runners_handling() -> None:
    upload = parse({"name": "u", "file": "u.pkl", "format": "numerai_pickle", "trust_pickle": True}).models[0]
    assert upload.fill_missing is None and upload.output.value == "raw"  # Numerai's runner neither fills nor ranks
    asked = parse({"name": "u", "file": "u.pkl", "format": "numerai_pickle", "trust_pickle": True,
                   "fill_missing": 2, "output": "rank"}).models[0]
    assert asked.fill_missing == 2.0 and asked.output.value == "rank"
    batch = parse(entry()).models[0]
    assert batch.fill_missing == 2.0 and batch.output.value == "rank"


def test_duplicate_names_and_empty_lists_are_refused() -> None:
    with pytest.raises(ManifestError, match="model names listed twice: my_model"):
        parse(entry(), entry())
    with pytest.raises(ManifestError, match="field 'models': List should have at least 1 item"):
        parse()


def test_not_json_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="models.json: not valid JSON"):
        parse_manifest("{models:", "models.json")
    with pytest.raises(ManifestError, match="models.json: not a manifest: its JSON nests too deeply"):
        parse_manifest("[" * 100_000 + "]" * 100_000, "models.json")
    with pytest.raises(ManifestError, match="nope.json: cannot be read"):
        load_manifest(tmp_path / "nope.json")


def test_select_keeps_order_and_names_unknown_models() -> None:
    manifest = parse(entry(name="a"), entry(name="b"), entry(name="c"))
    assert [m.name for m in manifest.select(["c", "a"]).models] == ["a", "c"]
    assert manifest.select(None) is manifest
    with pytest.raises(ManifestError, match=r"'zzz' are not in the manifest; it lists: a, b, c"):
        manifest.select(["a", "zzz"])


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        ({"file": "m" * 1025}, "file", "String should have at most 1024 characters"),
        ({"features": "s" * 201}, "features", "String should have at most 200 characters"),
        ({"features": ["feature_a", "f" * 201]}, "features.1", "String should have at most 200 characters"),
        ({"name": "n" * 100_000}, "name", "String should have at most 64 characters"),
    ],
)
def test_strings_are_bounded_and_the_error_does_not_repeat_them(bad: dict, field: str, words: str) -> None:
    with pytest.raises(ManifestError) as error:
        parse(entry(**bad))
    message = str(error.value)
    assert message.startswith("models.json: model #1")
    assert f"field '{field}': {words}" in message
    assert len(message) < 400
    assert parse(entry(file="m" * 1024, features=["f" * 200])).models[0].file == "m" * 1024
