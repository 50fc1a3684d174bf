"""The manifest is validated on load, with errors that name the file, the entry and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.errors import ManifestError
from shared.manifest import ModelFormat, ModelSpec, OutputTransform, load_manifest, parse_manifest


def entry(**fields: object) -> dict:
    base = {"name": "my_model", "file": "m.keras", "format": "keras", "features": "medium"}
    base.update(fields)
    return base


def parse(*entries: dict) -> object:
    return parse_manifest(json.dumps({"models": list(entries)}), "models.json")


def test_a_valid_manifest_gets_its_defaults() -> None:
    manifest = parse(
        entry(), entry(name="other", features=["feature_a", "feature_b"], output="raw")
    )
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
        (
            {"format": "pytorch"},
            "format",
            "'keras', 'lightgbm', 'onnx', 'numerai_pickle', 'sklearn', 'xgboost' or 'catboost'",
        ),
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
    with pytest.raises(
        ManifestError, match=r"model #1 \('my_model'\): field 'file': Field required"
    ):
        parse(raw)


def test_features_are_required_only_where_the_file_records_no_names() -> None:
    raw = entry()
    del raw["features"]
    with pytest.raises(
        ManifestError,
        match=r"model #1 \('my_model'\): field 'features' is required for format "
        "'keras', whose files do not record feature names",
    ):
        parse(raw)
    for fmt in ("lightgbm", "xgboost", "catboost", "sklearn"):
        extra = {"trust_pickle": True} if fmt == "sklearn" else {}
        assert (
            parse({"name": "m", "file": "m.bin", "format": fmt, **extra}).models[0].features is None
        )


def test_pickle_fields_apply_only_to_pickles() -> None:
    with pytest.raises(
        ManifestError, match="trust_pickle only applies to formats 'numerai_pickle' and 'sklearn'"
    ):
        parse(entry(trust_pickle=True))
    with pytest.raises(ManifestError, match="method only applies to format 'sklearn'"):
        parse(entry(method="predict_proba"))


def test_upload_pickles_default_to_the_hosted_runners_handling() -> None:
    upload = parse(
        {"name": "u", "file": "u.pkl", "format": "numerai_pickle", "trust_pickle": True}
    ).models[0]
    assert (
        upload.fill_missing is None and upload.output.value == "raw"
    )  # Numerai's runner neither fills nor ranks
    asked = parse(
        {
            "name": "u",
            "file": "u.pkl",
            "format": "numerai_pickle",
            "trust_pickle": True,
            "fill_missing": 2,
            "output": "rank",
        }
    ).models[0]
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
    with pytest.raises(
        ManifestError, match="models.json: not a manifest: its JSON nests too deeply"
    ):
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
        (
            {"features": ["feature_a", "f" * 201]},
            "features.1",
            "String should have at most 200 characters",
        ),
        ({"name": "n" * 100_000}, "name", "String should have at most 64 characters"),
    ],
)
def test_strings_are_bounded_and_the_error_does_not_repeat_them(
    bad: dict, field: str, words: str
) -> None:
    with pytest.raises(ManifestError) as error:
        parse(entry(**bad))
    message = str(error.value)
    assert message.startswith("models.json: model #1")
    assert f"field '{field}': {words}" in message
    assert len(message) < 400
    assert parse(entry(file="m" * 1024, features=["f" * 200])).models[0].file == "m" * 1024


# Ensembles, neutralization, submit and the benchmark gate.


def ensemble(name: str, **members: float) -> dict:
    return {"name": name, "members": members}


def test_an_ensemble_entry_and_the_new_fields_get_their_defaults() -> None:
    manifest = parse(
        entry(name="a", submit=False, neutralize={"proportion": 0.5, "features": "small"}),
        entry(name="b"),
        {**ensemble("ens", b=1, a=2.5), "min_benchmark_corr": 0.2, "max_benchmark_corr_drop": 0.3},
    )
    a, b, ens = manifest.models
    assert not a.is_ensemble and a.submit is False
    assert (
        a.neutralize is not None
        and a.neutralize.proportion == 0.5
        and a.neutralize.features == "small"
    )
    assert b.submit is True and b.neutralize is None and b.min_benchmark_corr is None
    assert ens.is_ensemble and ens.file is None and ens.format is None
    assert list(ens.members or {}) == ["b", "a"]  # the JSON object's order
    assert ens.members == {"b": 1.0, "a": 2.5}
    assert (ens.min_benchmark_corr, ens.max_benchmark_corr_drop) == (0.2, 0.3)
    # Fields left at their defaults, given or not, are harmless on an ensemble.
    assert (
        parse(entry(name="a"), {**ensemble("e", a=1), "fill_missing": 2, "output": "rank"})
        .models[1]
        .is_ensemble
    )


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        (
            {"neutralize": {"proportion": 0, "features": "small"}},
            "neutralize.proportion",
            "Input should be greater than 0",
        ),
        (
            {"neutralize": {"proportion": 1.5, "features": "small"}},
            "neutralize.proportion",
            "Input should be less than or equal to 1",
        ),
        (
            {"neutralize": {"proportion": 0.5, "features": []}},
            "neutralize.features",
            "the feature list is empty",
        ),
        ({"neutralize": {"proportion": 0.5}}, "neutralize.features", "Field required"),
        (
            {"neutralize": {"proportion": 0.5, "features": "small", "x": 1}},
            "neutralize.x",
            "Extra inputs",
        ),
        (
            {"min_benchmark_corr": 1.5},
            "min_benchmark_corr",
            "Input should be less than or equal to 1",
        ),
        (
            {"max_benchmark_corr_drop": 0},
            "max_benchmark_corr_drop",
            "Input should be greater than 0",
        ),
        (
            {"max_benchmark_corr_drop": 2.5},
            "max_benchmark_corr_drop",
            "Input should be less than or equal to 2",
        ),
        ({"submit": "maybe"}, "submit", "Input should be a valid boolean"),
    ],
)
def test_errors_in_the_new_fields_name_the_entry_and_field(
    bad: dict, field: str, words: str
) -> None:
    with pytest.raises(ManifestError) as error:
        parse(entry(name="fine"), entry(name="bad", **bad))
    assert f"models.json: model #2 ('bad'): field '{field}': {words}" in str(error.value)


def test_a_missing_format_is_named() -> None:
    raw = entry()
    del raw["format"]
    with pytest.raises(
        ManifestError, match=r"model #1 \('my_model'\): field 'format': Field required"
    ):
        parse(raw)
    with pytest.raises(
        ManifestError, match=r"model #1 \('my_model'\): field 'file': Field required"
    ):
        parse(entry(file=None))


def test_entries_survive_the_round_trip_through_a_run_plan() -> None:
    # Queue mode hands entries to workers as model_dump(mode="json") and validates them again.
    manifest = parse(
        entry(name="a", neutralize={"proportion": 0.5, "features": ["feature_a"]}),
        {**ensemble("ens", a=1), "submit": False, "min_benchmark_corr": 0.1},
    )
    for spec in manifest.models:
        again = ModelSpec.model_validate(spec.model_dump(mode="json"))
        assert again == spec and again.digest() == spec.digest()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("file", "m.keras"),
        ("format", "keras"),
        ("features", "medium"),
        ("output", "raw"),
        ("fill_missing", None),
        ("trust_pickle", True),
        ("method", "predict_proba"),
        ("data_version", "v5.2"),
    ],
)
def test_an_ensemble_refuses_the_fields_of_a_model_file(field: str, value: object) -> None:
    with pytest.raises(ManifestError) as error:
        parse(entry(name="a"), {**ensemble("ens", a=1), field: value})
    assert str(error.value) == (
        f"models.json: model #2 ('ens'): field '{field}': does not apply to an ensemble (an entry with "
        "'members'), which combines its members' predictions; set it on the members"
    )


@pytest.mark.parametrize(
    ("members", "words"),
    [
        ({}, "field 'members': an ensemble needs at least one member"),
        ({"a": 1, "b": -1}, "field 'members': the weights add up to 0; their sum must be positive"),
        ({"a": -2}, "field 'members': the weights add up to -2; their sum must be positive"),
        (
            {"a": float("inf")},
            "field 'members': the weight of member 'a' is inf, not a finite number",
        ),
        (
            {"a": float("nan")},
            "field 'members': the weight of member 'a' is nan, not a finite number",
        ),
        (
            {"a": "heavy"},
            "field 'members.a': Input should be a valid number, unable to parse string as a number",
        ),
    ],
)
def test_bad_members_name_the_ensemble_and_member(members: dict, words: str) -> None:
    with pytest.raises(ManifestError) as error:
        parse(entry(name="a"), entry(name="b"), {"name": "ens", "members": members})
    assert str(error.value) == f"models.json: model #3 ('ens'): {words}"


def test_a_huge_member_name_is_not_repeated() -> None:
    with pytest.raises(ManifestError) as error:
        parse(entry(name="a"), ensemble("ens", **{"m" * 100_000: 1}))
    assert "model #2 ('ens'): field 'members." in str(error.value)
    assert "String should have at most 64 characters" in str(error.value)
    assert len(str(error.value)) < 400


def test_an_unknown_member_is_named_with_the_entries_there_are() -> None:
    with pytest.raises(ManifestError) as error:
        parse(entry(name="b"), entry(name="a"), ensemble("ens", a=1, x=1))
    assert (
        str(error.value)
        == "models.json: ensemble 'ens': member 'x' is not in the manifest; it lists: a, b, ens"
    )


@pytest.mark.parametrize(
    ("entries", "cycle"),
    [
        ([ensemble("a", a=1)], "ensemble 'a' includes itself: a → a"),
        ([ensemble("a", b=1), ensemble("b", a=1)], "ensemble 'a' includes itself: a → b → a"),
        (
            [
                entry(name="m"),
                ensemble("top", m=1, a=1),
                ensemble("a", b=1),
                ensemble("b", m=1, c=1),
                ensemble("c", a=1),
            ],
            "ensemble 'a' includes itself: a → b → c → a",
        ),
    ],
)
def test_a_cycle_of_ensembles_is_shown(entries: list[dict], cycle: str) -> None:
    with pytest.raises(ManifestError) as error:
        parse(*entries)
    assert str(error.value) == f"models.json: {cycle}"


def nested() -> object:
    # "outer" blends "inner" (itself an ensemble of "a" and "b") with "c"; "d" stands alone.
    return parse(
        ensemble("outer", inner=1, c=1),
        entry(name="d"),
        ensemble("inner", b=1, a=1),
        entry(name="a"),
        entry(name="b", submit=False),
        entry(name="c"),
    )


def test_select_keeps_the_members_of_selected_ensembles_transitively() -> None:
    manifest = nested()
    assert [m.name for m in manifest.select(["outer"]).models] == ["outer", "inner", "a", "b", "c"]
    assert [m.name for m in manifest.select(["inner", "d"]).models] == ["d", "inner", "a", "b"]
    assert [m.name for m in manifest.select(["a"]).models] == ["a"]


def test_in_order_puts_members_before_their_ensembles_and_keeps_the_rest() -> None:
    assert [m.name for m in nested().in_order()] == ["d", "a", "b", "inner", "c", "outer"]
    plain = parse(entry(name="z"), entry(name="y"), ensemble("x", z=1), entry(name="w"))
    assert [m.name for m in plain.in_order()] == ["z", "y", "x", "w"]


def test_an_ensembles_digest_changes_when_a_member_changes_at_any_depth() -> None:
    def manifest(**b_fields: object) -> object:
        return parse(
            ensemble("outer", inner=1, c=1),
            ensemble("inner", a=1, b=2),
            entry(name="a"),
            entry(name="b", **b_fields),
            entry(name="c"),
        )

    before, after = manifest(), manifest(features="small")
    assert before.digest("a") == before.spec("a").digest() == after.digest("a")
    assert before.digest("b") != after.digest("b")
    assert before.digest("inner") != after.digest("inner")
    assert before.digest("outer") != after.digest("outer")
    assert before.digest("c") == after.digest("c")
    reweighted = parse(
        ensemble("outer", inner=1, c=1),
        ensemble("inner", a=1, b=3),
        entry(name="a"),
        entry(name="b"),
        entry(name="c"),
    )
    assert reweighted.digest("inner") != before.digest("inner")
    assert reweighted.digest("a") == before.digest("a")


def test_an_entry_without_the_new_fields_keeps_its_digest() -> None:
    # Archived predictions are reused under an equal digest: the upgrade must not invalidate them.
    # b37ad50df9d1a64b is the digest this entry had before ensembles existed.
    assert parse(entry()).models[0].digest() == "b37ad50df9d1a64b"
    assert parse(entry(submit=True)).models[0].digest() == "b37ad50df9d1a64b"
    assert parse(entry(submit=False)).models[0].digest() != "b37ad50df9d1a64b"


# --- Per-model data versions ----------------------------------------------------------


def test_an_entry_may_name_its_data_version() -> None:
    manifest = parse(entry(name="old", data_version="v5.2"), entry(name="new"))
    assert manifest.spec("old").data_version == "v5.2"
    assert manifest.spec("new").data_version is None  # the run's NUMERAI_DATA_VERSION


@pytest.mark.parametrize(
    "bad", ["5.2", "v5.", "v5.2/../x", "V5.2", "v5 ", "latest", "v" + "1" * 20]
)
def test_a_malformed_data_version_names_the_entry(bad: str) -> None:
    with pytest.raises(ManifestError) as error:
        parse(entry(name="fine"), entry(name="bad", data_version=bad))
    assert "models.json: model #2 ('bad'): field 'data_version': " in str(error.value)


def test_the_data_version_leaves_the_digest_alone() -> None:
    # The archive's metadata records the version predictions were made from; the digest need not.
    assert parse(entry(data_version="v5.2")).models[0].digest() == "b37ad50df9d1a64b"
    spec = parse(entry(data_version="v5.2")).models[0]
    assert ModelSpec.model_validate(spec.model_dump(mode="json")) == spec  # through a run plan
