"""Model formats on real files saved by the libraries: each predicts as its library does, checks
the file's recorded feature names against the manifest, and a file of another format is named."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import cloudpickle
import joblib
import numpy as np
import pandas as pd
import pytest

from devkit.example_models import write_catboost, write_lightgbm, write_xgboost
from devkit.synthetic import SyntheticRound, training_rows
from shared.errors import ModelLoadError
from shared.formats import BatchModel, load_model
from shared.formats.sniff import sniff
from shared.manifest import ModelSpec

BATCH = 128  # the round's 503 rows make four batches, the last one short


def spec(fmt: str, file: str, **fields) -> ModelSpec:
    return ModelSpec(name="m", file=file, format=fmt, **fields)


def live_rows(round_: SyntheticRound, columns: list[str]) -> np.ndarray:
    """The round's values of `columns`, as the engine hands them to a model."""
    return pd.read_parquet(round_.live_path, columns=columns).to_numpy(np.float32)


def predict_in_batches(model: BatchModel, rows: np.ndarray) -> np.ndarray:
    return np.concatenate([model.predict_batch(rows[i:i + BATCH]) for i in range(0, len(rows), BATCH)])


def fitted_ridge(features: list[str]):
    from sklearn.linear_model import Ridge

    x, y = training_rows(features, 200, 0)
    return Ridge().fit(pd.DataFrame(x, columns=features), y)


# --- Telling formats apart from a file's first bytes ---

def _joblib(compress):
    return lambda path, obj: joblib.dump(obj, path, compress=compress)


PICKLE_WRITERS: dict[str, Callable[[Path, object], object]] = {
    "joblib": _joblib(0),
    "joblib compress=3": _joblib(3),
    **{f"joblib {method}": _joblib((method, 3)) for method in ("zlib", "gzip", "bz2", "xz", "lzma")},
    "pickle": lambda path, obj: path.write_bytes(pickle.dumps(obj)),
    "pickle protocol 2": lambda path, obj: path.write_bytes(pickle.dumps(obj, protocol=2)),
    "pickle protocol 0": lambda path, obj: path.write_bytes(pickle.dumps(obj, protocol=0)),
    "cloudpickle": lambda path, obj: path.write_bytes(cloudpickle.dumps(obj)),
}


@pytest.mark.parametrize("how", PICKLE_WRITERS)
def test_pickles_and_joblib_files_are_recognised(how: str, tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    PICKLE_WRITERS[how](path, fitted_ridge(["feature_a", "feature_b"]))
    assert sniff(path.read_bytes()[:256]) == "pickle"


def _xgboost_json_pretty(path: Path) -> None:
    """An XGBoost JSON re-indented by an editor that also added a byte order mark."""
    import json

    write_xgboost(path, FEATURES)
    text = json.dumps(json.loads(path.read_text()), indent=2)
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())


def _xgboost_json_version_first(path: Path) -> None:
    """An XGBoost JSON rewritten by a tool that put "version" first."""
    import json

    write_xgboost(path, FEATURES)
    document = json.loads(path.read_text())
    path.write_text(json.dumps({"version": document.pop("version"), **document}))


def _catboost_json(path: Path) -> None:
    import catboost

    write_catboost(path.with_suffix(".cbm"), FEATURES)
    catboost.CatBoost().load_model(str(path.with_suffix(".cbm"))).save_model(str(path), format="json")


def _lightgbm_dump(path: Path) -> None:
    import json

    import lightgbm

    write_lightgbm(path.with_suffix(".txt"), FEATURES)
    path.write_text(json.dumps(lightgbm.Booster(model_file=str(path.with_suffix(".txt"))).dump_model()))


FEATURES = [f"feature_{i:04d}" for i in range(12)]
FILES: dict[str, tuple[str, Callable[[Path], object], str]] = {
    # name: (file name, writer, kind)
    "xgboost json": ("model.json", lambda p: write_xgboost(p, FEATURES), "xgboost"),
    "xgboost ubj": ("model.ubj", lambda p: write_xgboost(p, FEATURES), "xgboost"),
    "xgboost json re-indented": ("model.json", _xgboost_json_pretty, "xgboost"),
    "xgboost json version first": ("model.json", _xgboost_json_version_first, "xgboost"),
    "catboost cbm": ("model.cbm", lambda p: write_catboost(p, FEATURES), "catboost"),
    "catboost json": ("model.json", _catboost_json, "catboost_json"),
    "lightgbm text": ("model.txt", lambda p: write_lightgbm(p, FEATURES), "lightgbm"),
    "lightgbm dump_model json": ("model.json", _lightgbm_dump, "lightgbm_json"),
}


@pytest.mark.parametrize("name", FILES)
def test_library_files_are_recognised(name: str, tmp_path: Path) -> None:
    filename, write, kind = FILES[name]
    path = tmp_path / filename
    write(path)
    assert sniff(path.read_bytes()[:256]) == kind


WRONG_FORMATS = [
    # (file, declared format, what the message must say)
    ("xgboost json", "lightgbm", 'looks like an XGBoost model; set "format": "xgboost"'),
    ("xgboost ubj", "lightgbm", 'looks like an XGBoost model; set "format": "xgboost"'),
    ("xgboost json re-indented", "lightgbm", 'looks like an XGBoost model; set "format": "xgboost"'),
    ("catboost cbm", "xgboost", 'looks like a CatBoost model; set "format": "catboost"'),
    ("lightgbm text", "catboost", 'looks like a LightGBM text model; set "format": "lightgbm"'),
    ("lightgbm text", "xgboost", 'looks like a LightGBM text model; set "format": "lightgbm"'),
    ("xgboost json", "catboost", 'looks like an XGBoost model; set "format": "xgboost"'),
    ("catboost json", "catboost", "looks like a CatBoost JSON model; save it with model.save_model('model.cbm')"),
    ("lightgbm dump_model json", "xgboost", "looks like a LightGBM JSON dump"),
]


@pytest.mark.parametrize(("name", "declared", "says"), WRONG_FORMATS)
def test_a_file_of_another_format_is_named(name: str, declared: str, says: str, tmp_path: Path) -> None:
    filename, write, _ = FILES[name]
    path = tmp_path / filename
    write(path)
    with pytest.raises(ModelLoadError) as error:
        load_model(spec(declared, filename), path, FEATURES)
    message = str(error.value)
    assert message.startswith(f"model 'm': '{filename}' is declared \"{declared}\"")
    assert says in message


@pytest.mark.parametrize("how", ["joblib", "joblib compress=3", "pickle protocol 0", "cloudpickle"])
@pytest.mark.parametrize("declared", ["onnx", "xgboost", "catboost", "lightgbm"])
def test_a_joblib_or_pickle_file_declared_otherwise_is_named(how: str, declared: str, tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    columns = ["feature_a", "feature_b"]
    PICKLE_WRITERS[how](path, fitted_ridge(columns))
    with pytest.raises(ModelLoadError) as error:
        load_model(spec(declared, "model.joblib", features=columns), path, columns)
    assert "looks like a pickle or joblib file; use \"sklearn\" for a saved estimator" in str(error.value)
