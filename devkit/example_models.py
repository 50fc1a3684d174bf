"""Small trained models in every supported format, and a manifest that lists them.

Each writer trains on synthetic rows (see `synthetic.training_rows`) and saves
the model the way a Numerai participant would: Keras `save`, LightGBM
`save_model`, an ONNX graph, a cloudpickled `predict` function of the kind
Numerai's hosted model uploads accept, a joblib-dumped scikit-learn Pipeline or
LGBMRegressor, an XGBoost `.json` or a CatBoost `.cbm`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from devkit.synthetic import training_rows

log = logging.getLogger(__name__)

TRAIN_ROWS = 2000


def write_keras(
    path: Path, features: list[str], hidden: tuple[int, ...] = (64,), seed: int = 0
) -> None:
    """An MLP trained for one epoch, saved as `.keras` or `.h5` by the path's suffix."""
    import keras

    keras.utils.set_random_seed(seed)
    x, y = training_rows(features, TRAIN_ROWS, seed)
    layers = [keras.Input(shape=(len(features),))]
    layers += [keras.layers.Dense(width, activation="relu") for width in hidden]
    layers.append(keras.layers.Dense(1))
    model = keras.Sequential(layers)
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=1, batch_size=256, verbose=0)
    model.save(path)


def write_lightgbm(path: Path, features: list[str], rounds: int = 30, seed: int = 0) -> None:
    """A LightGBM regressor saved in LightGBM's text format, with its feature names."""
    import lightgbm

    x, y = training_rows(features, TRAIN_ROWS, seed)
    params = {
        "objective": "regression",
        "num_leaves": 15,
        "learning_rate": 0.1,
        "verbose": -1,
        "seed": seed,
        "num_threads": 1,
    }
    booster = lightgbm.train(params, lightgbm.Dataset(x, y, feature_name=features), rounds)
    booster.save_model(str(path))


def write_onnx(path: Path, features: list[str], seed: int = 0) -> None:
    """A ridge regression fitted with numpy and written as an ONNX graph."""
    x, y = training_rows(features, TRAIN_ROWS, seed)
    design = np.hstack([x, np.ones((len(x), 1), np.float32)])
    solution = np.linalg.solve(design.T @ design + np.eye(design.shape[1]), design.T @ y)
    write_onnx_linear(path, solution[:-1], float(solution[-1]))


def write_onnx_linear(
    path: Path, weights: np.ndarray, bias: float, open_width: bool = False
) -> None:
    """An ONNX graph computing features @ weights + bias (MatMul + Add), one output column.

    With `open_width` the input's width is a name, as an export with a dynamic axis leaves it.
    """
    from onnx import TensorProto, helper, numpy_helper

    width = "n_features" if open_width else len(weights)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["prediction"]),
        ],
        "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, [None, 1])],
        initializer=[
            numpy_helper.from_array(np.asarray(weights, np.float32).reshape(-1, 1), "w"),
            numpy_helper.from_array(np.asarray([bias], np.float32), "b"),
        ],
    )
    _save_onnx(path, graph)


def write_onnx_stump(path: Path, feature: int) -> None:
    """A one-split ONNX tree ensemble on column `feature`, its input width left open.

    Converters write tree models this way when given a dynamic width: the graph
    reads columns by index and records no width at all.
    """
    from onnx import TensorProto, helper

    stump = helper.make_node(
        "TreeEnsembleRegressor",
        ["features"],
        ["prediction"],
        domain="ai.onnx.ml",
        n_targets=1,
        nodes_treeids=[0, 0, 0],
        nodes_nodeids=[0, 1, 2],
        nodes_featureids=[feature, 0, 0],
        nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"],
        nodes_values=[2.0, 0.0, 0.0],
        nodes_truenodeids=[1, 0, 0],
        nodes_falsenodeids=[2, 0, 0],
        target_treeids=[0, 0],
        target_nodeids=[1, 2],
        target_ids=[0, 0],
        target_weights=[0.25, 0.75],
    )
    graph = helper.make_graph(
        [stump],
        "stump",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, "n_features"])],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, [None, 1])],
    )
    _save_onnx(path, graph, helper.make_opsetid("ai.onnx.ml", 3))


def _save_onnx(path: Path, graph: Any, *more_opsets: Any) -> None:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), *more_opsets])
    model.ir_version = 8  # readable by every onnxruntime of the last years
    onnx.checker.check_model(model)
    onnx.save(model, path)


def write_numerai_pickle(path: Path, features: list[str], seed: int = 0) -> None:
    """A cloudpickled predict(live_features, live_benchmark_models), as Numerai's uploads take."""
    import cloudpickle

    with path.open("wb") as handle:
        cloudpickle.dump(_linear_predict(features, seed), handle)


def _linear_predict(features: list[str], seed: int) -> Callable[..., Any]:
    x, y = training_rows(features, TRAIN_ROWS, seed)
    weights, *_ = np.linalg.lstsq(x - 2.0, y - y.mean(), rcond=None)

    # Nested, so cloudpickle stores it by value: the file runs without this repo.
    def predict(live_features, live_benchmark_models=None):
        import pandas

        # Numerai's runner passes NaN as it is: the function fills it itself.
        scores = (live_features[features].fillna(2.0).to_numpy(dtype="float32") - 2.0) @ weights
        ranked = pandas.Series(scores, index=live_features.index).rank(pct=True)
        return ranked.to_frame("prediction")

    return predict


def write_sklearn(path: Path, features: list[str], seed: int = 0) -> None:
    """A scikit-learn Pipeline (scaler, ridge) fitted on a DataFrame, saved with joblib.dump."""
    import joblib
    import pandas as pd
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = training_rows(features, TRAIN_ROWS, seed)
    # A DataFrame, as participants fit: the pipeline records the feature names.
    pipeline = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    pipeline.fit(pd.DataFrame(x, columns=features), y)
    joblib.dump(pipeline, path)


def write_lgbm_regressor(path: Path, features: list[str], rounds: int = 30, seed: int = 0) -> None:
    """An LGBMRegressor fitted on a DataFrame, joblib-dumped as numerai-cli's example saves it."""
    import joblib
    import lightgbm
    import pandas as pd

    x, y = training_rows(features, TRAIN_ROWS, seed)
    model = lightgbm.LGBMRegressor(
        n_estimators=rounds,
        num_leaves=15,
        learning_rate=0.1,
        random_state=seed,
        n_jobs=1,
        verbose=-1,
    )
    model.fit(pd.DataFrame(x, columns=features), y)
    joblib.dump(model, path)


def write_xgboost(path: Path, features: list[str], rounds: int = 30, seed: int = 0) -> None:
    """An XGBoost regressor saved by Booster.save_model: `.json` or `.ubj` by the suffix."""
    import xgboost

    x, y = training_rows(features, TRAIN_ROWS, seed)
    params = {
        "objective": "reg:squarederror",
        "max_depth": 4,
        "eta": 0.1,
        "seed": seed,
        "nthread": 1,
    }
    booster = xgboost.train(params, xgboost.DMatrix(x, y, feature_names=features), rounds)
    booster.save_model(str(path))


def write_catboost(path: Path, features: list[str], rounds: int = 30, seed: int = 0) -> None:
    """A CatBoost regressor saved in CatBoost's binary format (`.cbm`), with its feature names."""
    import catboost

    x, y = training_rows(features, TRAIN_ROWS, seed)
    # allow_writing_files=False: no catboost_info/ folder in the working directory.
    model = catboost.CatBoostRegressor(
        iterations=rounds,
        depth=4,
        learning_rate=0.1,
        random_seed=seed,
        thread_count=1,
        verbose=0,
        allow_writing_files=False,
    )
    model.fit(catboost.Pool(x, y, feature_names=features))
    model.save_model(str(path))


WRITERS: dict[str, tuple[str, Callable[..., None]]] = {
    "keras": (".keras", write_keras),
    "lightgbm": (".txt", write_lightgbm),
    "onnx": (".onnx", write_onnx),
    "numerai_pickle": (".pkl", write_numerai_pickle),
    "sklearn": (".joblib", write_sklearn),
    "lgbm_regressor": (".joblib", write_lgbm_regressor),
    "xgboost": (".json", write_xgboost),
    "catboost": (".cbm", write_catboost),
}
# The manifest format of writers not named after one.
WRITER_FORMATS: dict[str, str] = {"lgbm_regressor": "sklearn"}


def write_example_models(
    directory: Path, feature_sets: dict[str, list[str]], plan: list[tuple[str, str, str]]
) -> dict[str, Any]:
    """Write one model per (name, writer, feature set) in `plan` and `models.json` listing them.

    A writer is a key of `WRITERS`: a format's name, or another way to save one
    (`lgbm_regressor` writes a "sklearn" file).

    Returns the manifest as a dict.
    """
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for seed, (name, kind, feature_set) in enumerate(plan):
        suffix, writer = WRITERS[kind]
        fmt = WRITER_FORMATS.get(kind, kind)
        filename = f"{name}{suffix}"
        writer(directory / filename, feature_sets[feature_set], seed=seed)
        entry: dict[str, Any] = {
            "name": name,
            "file": filename,
            "format": fmt,
            "features": feature_set,
        }
        if fmt == "numerai_pickle":
            # Numerai's runner hands the function every column; it picks its own.
            del entry["features"]
        if fmt in ("numerai_pickle", "sklearn"):
            entry["trust_pickle"] = True  # written just now, by this code
        entries.append(entry)
        log.info("wrote %s model %s on feature set %s", kind, filename, feature_set)
    manifest = {"models": entries}
    (directory / "models.json").write_text(json.dumps(manifest, indent=2))
    return manifest


DEMO_PLAN = [
    ("demo_keras", "keras", "all"),
    ("demo_lightgbm", "lightgbm", "medium"),
    ("demo_onnx", "onnx", "small"),
    ("demo_upload", "numerai_pickle", "medium"),
]
# Estimator pickles and the other boosting libraries' own files.
MORE_FORMATS_PLAN = [
    ("demo_sklearn", "sklearn", "medium"),
    ("demo_lgbm_regressor", "lgbm_regressor", "small"),
    ("demo_xgboost", "xgboost", "small"),
    ("demo_catboost", "catboost", "medium"),
]
