"""Per-model data versions (issue #13): each model predicts from the version its manifest entry names.

The Numerai sandbox serves a second version beside the deployed v5.3; the run
downloads each version it needs once, and a version Numerai lacks fails only the
models that use it.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from devkit.local_stack import DATA_VERSION, LocalStack
from devkit.synthetic import SyntheticRound, write_benchmark
from shared.errors import RunFailed
from shared.manifest import ModelSpec
from tests.support import (
    MODELS,
    TEST_PLAN,
    deliver,
    downloads,
    fire_timer,
    line,
    predict,
    reports,
    results,
)

ROUND = 1200


def serve_version(
    stack: LocalStack,
    small_round: SyntheticRound,
    directory: Path,
    version: str,
    *,
    flip: bool = False,
    drop_rows: int = 0,
) -> SyntheticRound:
    """Serve a copy of the round as `version`: its features mirrored (other predictions), or rows dropped."""
    shutil.copytree(small_round.directory, directory)
    live = pd.read_parquet(directory / "live.parquet")
    features = small_round.feature_sets["all"]
    if flip:
        live[features] = (4 - live[features]).astype(live[features].dtypes)
    live.iloc[drop_rows:].to_parquet(directory / "live.parquet")
    write_benchmark(directory, small_round.ids[drop_rows:], version, np.random.default_rng(3))
    stack.sandbox.add_dataset_dir(version, directory)
    return SyntheticRound(directory, small_round.feature_sets, small_round.ids[drop_rows:])


def set_entries(
    stack: LocalStack, change: dict[str, dict], extra: list[dict] | None = None
) -> None:
    """Change some manifest entries (name → fields; None removes a field) and add others."""
    container = stack.blob_service.get_container_client(stack.models_container)
    manifest = json.loads(container.download_blob("models.json").readall())
    for entry in manifest["models"]:
        for field, value in change.get(entry["name"], {}).items():
            if value is None:
                entry.pop(field, None)
            else:
                entry[field] = value
    manifest["models"] += extra or []
    for entry in extra or []:
        stack.sandbox.models.setdefault(entry["name"], f"id-{entry['name']}")
    container.upload_blob("models.json", json.dumps(manifest), overwrite=True)


def test_two_models_on_two_versions_each_predict_from_their_own_data_downloaded_once(
    deployed: LocalStack,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
) -> None:
    older = serve_version(deployed, small_round, tmp_path / "v5.2", "v5.2", flip=True)
    # The members of an ensemble may use different versions: their live ids are the same.
    set_entries(
        deployed,
        {"demo_lightgbm": {"data_version": "v5.2"}, "demo_onnx": {"data_version": "v5.2"}},
        [{"name": "mixed", "members": {"demo_lightgbm": 1, "demo_catboost": 1}}],
    )
    fire_timer()
    report = reports(deployed)[-1]
    assert report["status"] == "succeeded", report
    for name in MODELS:
        expected = "v5.2" if name in ("demo_lightgbm", "demo_onnx") else DATA_VERSION
        assert line(report, name)["data_version"] == expected
        assert line(report, name)["status"] == "submitted"
    assert (
        line(report, "mixed")["status"] == "submitted"
        and line(report, "mixed")["data_version"] is None
    )

    fetched = Counter(downloads(deployed))
    assert set(fetched.values()) == {1}, fetched  # each file of each version once
    assert {
        "GET /files/v5.2/features.json",
        "GET /files/v5.2/live.parquet",
        "GET /files/v5.3/features.json",
        "GET /files/v5.3/live.parquet",
    } <= set(fetched)

    # The worker read v5.2's live data: the predictions are those of the mirrored features.
    _, kind, _ = next(p for p in TEST_PLAN if p[0] == "demo_lightgbm")
    spec = ModelSpec(
        name="demo_lightgbm", file="demo_lightgbm.txt", format=kind, data_version="v5.2"
    )
    outcome = predict(older, [(spec, example_models / "demo_lightgbm.txt")], tmp_path / "direct")[
        "demo_lightgbm"
    ]
    assert results(deployed).archive.read(ROUND, "demo_lightgbm") == outcome.csv
    assert report["notes"] == [  # once, for both models on v5.2
        (
            "Numerai lists data version v5.3, newer than some models use (v5.2: demo_lightgbm, demo_onnx); a model "
            "keeps the version it was trained on: retrain it on the new one, then set its data_version"
        )
    ]


def test_a_version_numerai_lacks_fails_only_its_models_and_names_them(
    deployed: LocalStack,
    small_round: SyntheticRound,
) -> None:
    set_entries(deployed, {"demo_onnx": {"data_version": "v4.9"}})
    with pytest.raises(RunFailed):
        fire_timer()
    report = reports(deployed)[-1]
    assert line(report, "demo_onnx")["error"] == (
        f"model 'demo_onnx': data version v4.9 is not available for round {ROUND}: Numerai lists v5.3"
    )
    assert line(report, "demo_onnx")["data_version"] == "v4.9"
    assert all(line(report, n)["status"] == "submitted" for n in MODELS if n != "demo_onnx")
    assert not any("v4.9" in d for d in downloads(deployed))


def test_a_newer_version_is_noted_once_per_run_not_as_an_error(
    deployed: LocalStack,
    small_round: SyntheticRound,
    tmp_path: Path,
) -> None:
    serve_version(deployed, small_round, tmp_path / "v5.10", "v5.10")  # newer than v5.3 and v5.9
    serve_version(deployed, small_round, tmp_path / "v5.2", "v5.2")
    set_entries(deployed, {"demo_lightgbm": {"data_version": "v5.2"}})
    fire_timer()
    report = reports(deployed)[-1]
    assert report["status"] == "succeeded"
    assert report["notes"] == [
        (
            "Numerai lists data version v5.10, newer than some models use (v5.2: demo_lightgbm; v5.3: demo_catboost, "
            "demo_onnx, demo_upload); a model keeps the version it was trained on: retrain it on the new one, then "
            "set its data_version"
        )
    ]
    assert all(
        "v5.10" not in " ".join(line(report, n)["warnings"]) for n in MODELS
    )  # said once, on the run
    assert not any("v5.10" in d for d in downloads(deployed))


def test_archived_predictions_are_reused_only_for_the_same_data_version(
    deployed: LocalStack,
    small_round: SyntheticRound,
    tmp_path: Path,
) -> None:
    serve_version(deployed, small_round, tmp_path / "v5.2", "v5.2", flip=True)
    set_entries(deployed, {"demo_lightgbm": {"data_version": "v5.2"}})
    deployed.sandbox.faults.put_status = 403  # everything is archived, nothing uploaded
    with pytest.raises(RunFailed):
        fire_timer()
    archived = results(deployed).archive.archived(ROUND, "demo_lightgbm")
    assert archived is not None and archived.metadata["data_version"] == "v5.2"
    assert (
        results(deployed).archive.archived(ROUND, "demo_onnx").metadata["data_version"]
        == DATA_VERSION
    )

    # Naming the run's version explicitly changes nothing; moving demo_lightgbm to v5.3 predicts it again.
    set_entries(
        deployed,
        {"demo_onnx": {"data_version": DATA_VERSION}, "demo_lightgbm": {"data_version": None}},
    )
    deployed.sandbox.faults.reset()
    fire_timer()
    report = reports(deployed)[-1]
    assert line(report, "demo_lightgbm")["from_archive"] is False
    assert all(line(report, n)["from_archive"] for n in MODELS if n != "demo_lightgbm")
    assert (
        results(deployed).archive.archived(ROUND, "demo_lightgbm").metadata["data_version"]
        == DATA_VERSION
    )


def test_an_ensemble_of_versions_with_other_live_ids_fails_naming_members_and_versions(
    deployed: LocalStack,
    small_round: SyntheticRound,
    tmp_path: Path,
) -> None:
    serve_version(deployed, small_round, tmp_path / "v5.1", "v5.1", drop_rows=10)
    set_entries(
        deployed,
        {"demo_lightgbm": {"data_version": "v5.1"}},
        [{"name": "mixed", "members": {"demo_lightgbm": 1, "demo_catboost": 1}}],
    )
    with pytest.raises(RunFailed):
        fire_timer()
    report = reports(deployed)[-1]
    error = line(report, "mixed")["error"]
    assert (
        "ensemble 'mixed': member 'demo_catboost' predicted different ids from member 'demo_lightgbm'"
        in error
    )
    assert error.endswith(
        "; its members use different data versions ('demo_lightgbm' v5.1, 'demo_catboost' "
        "v5.3), which an ensemble allows only when they predict the same live ids"
    )
    assert all(line(report, n)["status"] == "submitted" for n in MODELS)


def test_queue_tasks_use_their_models_version_from_the_instance_cache(
    deployed: LocalStack,
    small_round: SyntheticRound,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODEL_EXECUTION", "queue")
    serve_version(deployed, small_round, tmp_path / "v5.2", "v5.2", flip=True)
    set_entries(
        deployed, {"demo_lightgbm": {"data_version": "v5.2"}, "demo_onnx": {"data_version": "v5.4"}}
    )
    fire_timer()
    assert deliver(deployed) == len(MODELS)
    report = reports(deployed)[-1]
    assert line(report, "demo_lightgbm")["status"] == "submitted"
    assert line(report, "demo_lightgbm")["data_version"] == "v5.2"
    assert line(report, "demo_onnx")["error"] == (
        f"model 'demo_onnx': data version v5.4 is not available for round {ROUND}: Numerai lists v5.2, v5.3"
    )
    assert all(line(report, n)["status"] == "submitted" for n in MODELS if n != "demo_onnx")
    assert (
        results(deployed).archive.archived(ROUND, "demo_lightgbm").metadata["data_version"]
        == "v5.2"
    )
    # One instance ran every task: each version's files were downloaded once, and both are kept.
    assert set(Counter(downloads(deployed)).values()) == {1}
    cached = {
        p.name for p in (tmp_path / "work" / "round-data").glob("round-*") if any(p.iterdir())
    }
    assert cached == {f"round-{ROUND}-v5.2", f"round-{ROUND}-v5.3"}


# --- The benchmark by data version (issue #19, point 3) -------------------------------


def test_each_model_is_compared_with_its_own_versions_main_benchmark_when_benchmark_model_is_unset(
    deployed: LocalStack,
    small_round: SyntheticRound,
    tmp_path: Path,
) -> None:
    # v5.3's file names its benchmarks v53_* and has none of v5.2's, as Numerai serves it.
    assert pq.read_schema(small_round.benchmark_path).names[:2] == [
        "v53_lgbm_ender20",
        "v53_lgbm_cyrusd20",
    ]
    serve_version(deployed, small_round, tmp_path / "v5.2", "v5.2")
    set_entries(deployed, {"demo_lightgbm": {"data_version": "v5.2"}})
    fire_timer()
    report = reports(deployed)[-1]
    assert report["status"] == "succeeded", report
    for name in MODELS:
        expected = "v52_lgbm_teager2b20" if name == "demo_lightgbm" else "v53_lgbm_ender20"
        assert line(report, name)["benchmark_model"] == expected
        assert line(report, name)["benchmark_corr"] is not None
        assert line(report, name)["warnings"] == [] and line(report, name)["notes"] == []
    assert "GET /files/v5.2/live_benchmark_models.parquet" in downloads(deployed)


def test_without_the_versions_main_column_the_first_of_its_prefix_stands_in_with_a_note(
    deployed: LocalStack,
    small_round: SyntheticRound,
    tmp_path: Path,
) -> None:
    directory = tmp_path / "v5.3"
    shutil.copytree(small_round.directory, directory)
    benchmark = pd.read_parquet(directory / "live_benchmark_models.parquet")
    benchmark.drop(columns=["v53_lgbm_ender20"]).to_parquet(
        directory / "live_benchmark_models.parquet"
    )
    deployed.sandbox.add_dataset_dir(DATA_VERSION, directory)
    fire_timer()
    report = reports(deployed)[-1]
    assert report["status"] == "succeeded", report
    for name in MODELS:
        assert line(report, name)["benchmark_model"] == "v53_lgbm_cyrusd20"
        assert line(report, name)["warnings"] == []  # a note, not a warning on every round
        assert line(report, name)["notes"] == [
            (
                f"model '{name}': the benchmark check used 'v53_lgbm_cyrusd20', the first v53_* column: "
                "v5.3's live_benchmark_models.parquet has no 'v53_lgbm_ender20' (set BENCHMARK_MODEL to "
                "choose another)"
            )
        ]


def test_benchmark_model_is_unset_by_default() -> None:
    from shared.settings import load_settings

    assert (
        load_settings(
            {
                "NUMERAI_PUBLIC_ID": "p",
                "NUMERAI_SECRET_KEY": "s",
                "MODELS_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true",
            }
        ).benchmark_model
        is None
    )
