"""Numerai hosted-model pickles: refused unless trusted, called and checked as Numerai's runner does."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cloudpickle
import pandas as pd
import pytest

from devkit.synthetic import SyntheticRound
from shared.errors import ModelLoadError, PredictionError
from shared.live_data import LiveData, read_feature_sets
from shared.manifest import ModelSpec
from shared.model_formats import load_model
from shared.predictor import predict_round


def pickled(tmp_path: Path, function, name: str = "model.pkl") -> Path:
    path = tmp_path / name
    path.write_bytes(cloudpickle.dumps(function))
    return path


def spec(trust: bool = True, features: str = "small") -> ModelSpec:
    return ModelSpec(name="upload", file="model.pkl", format="numerai_pickle", features=features, trust_pickle=trust)


def test_a_pickle_is_not_opened_without_the_opt_in(tmp_path: Path) -> None:
    opened = tmp_path / "opened"

    class Tripwire:
        def __reduce__(self):
            return (Path.touch, (opened,))  # would run on unpickling

    path = pickled(tmp_path, Tripwire())
    with pytest.raises(ModelLoadError) as error:
        load_model(spec(trust=False), path, ["feature_0000"])
    assert "loading a pickle runs the code inside it" in str(error.value)
    assert '"trust_pickle": true' in str(error.value)
    assert not opened.exists()


def test_the_manifest_cannot_trust_a_pickle_under_another_format() -> None:
    with pytest.raises(ValueError, match="trust_pickle only applies"):
        ModelSpec(name="x", file="x.onnx", format="onnx", features="small", trust_pickle=True)


def test_predict_gets_its_columns_with_id_index_and_the_benchmark_models(
    small_round: SyntheticRound, tmp_path: Path
) -> None:
    record = tmp_path / "seen.json"  # the unpickled function is a copy: it reports through a file

    def predict(live_features, live_benchmark_models):
        record.write_text(json.dumps({
            "columns": list(live_features.columns),
            "index": live_features.index.name,
            "dtypes": sorted(set(live_features.dtypes.astype(str))),
            "benchmark_ids": list(live_benchmark_models.index),
        }))
        return live_features.iloc[:, :1].rank(pct=True).set_axis(["prediction"], axis=1)

    path = pickled(tmp_path, predict)
    [outcome] = predict_round(
        LiveData(small_round.live_path, "v5.3"), read_feature_sets(small_round.features_path),
        [(spec(), path)], 100, benchmark_path=small_round.benchmark_path,
    )
    assert outcome.ok, outcome.error
    seen = json.loads(record.read_text())
    assert seen["columns"] == small_round.feature_sets["small"]
    assert seen["index"] == "id"
    assert seen["dtypes"] == ["int8"]
    assert seen["benchmark_ids"] == small_round.ids


def test_a_one_argument_predict_is_accepted(small_round: SyntheticRound, tmp_path: Path) -> None:
    path = pickled(tmp_path, lambda live: live.iloc[:, :1].rank(pct=True).set_axis(["prediction"], axis=1))
    [outcome] = predict_round(
        LiveData(small_round.live_path, "v5.3"), read_feature_sets(small_round.features_path), [(spec(), path)], 100
    )
    assert outcome.ok, outcome.error


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (lambda f: None, "predict() returned NoneType; expected a DataFrame"),
        (lambda f: f.iloc[:0, :1].set_axis(["prediction"], axis=1), "predict() returned an empty DataFrame"),
        (lambda f: f.iloc[:, :1], "expected a 'prediction' column"),
        (lambda f: f.iloc[:, :1].set_axis(["prediction"], axis=1).astype(float).mask(f.iloc[:, :1].to_numpy() == 0),
         "predict() returned NaN for"),
        (lambda f: f.iloc[:10, :1].set_axis(["prediction"], axis=1), "returned no prediction for 493 of 503 live ids"),
    ],
)
def test_output_is_checked_as_numerais_runner_does(
    small_round: SyntheticRound, tmp_path: Path, result, message: str
) -> None:
    model = load_model(spec(), pickled(tmp_path, lambda live, benchmarks=None: result(live)), ["feature_0000"])
    features = pd.read_parquet(small_round.live_path)[["feature_0000"]]
    with pytest.raises(PredictionError, match=re.escape(message)):
        model.predict_round(features, None)
