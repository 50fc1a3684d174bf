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

from devkit.example_models import (
    write_catboost,
    write_lightgbm,
    write_onnx_linear,
    write_onnx_stump,
    write_xgboost,
)
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
    return np.concatenate(
        [model.predict_batch(rows[i : i + BATCH]) for i in range(0, len(rows), BATCH)]
    )


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
    **{
        f"joblib {method}": _joblib((method, 3)) for method in ("zlib", "gzip", "bz2", "xz", "lzma")
    },
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
    catboost.CatBoost().load_model(str(path.with_suffix(".cbm"))).save_model(
        str(path), format="json"
    )


def _lightgbm_dump(path: Path) -> None:
    import json

    import lightgbm

    write_lightgbm(path.with_suffix(".txt"), FEATURES)
    path.write_text(
        json.dumps(lightgbm.Booster(model_file=str(path.with_suffix(".txt"))).dump_model())
    )


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
    (
        "xgboost json re-indented",
        "lightgbm",
        'looks like an XGBoost model; set "format": "xgboost"',
    ),
    ("catboost cbm", "xgboost", 'looks like a CatBoost model; set "format": "catboost"'),
    ("lightgbm text", "catboost", 'looks like a LightGBM text model; set "format": "lightgbm"'),
    ("lightgbm text", "xgboost", 'looks like a LightGBM text model; set "format": "lightgbm"'),
    ("xgboost json", "catboost", 'looks like an XGBoost model; set "format": "xgboost"'),
    (
        "catboost json",
        "catboost",
        "looks like a CatBoost JSON model; save it with model.save_model('model.cbm')",
    ),
    ("lightgbm dump_model json", "xgboost", "looks like a LightGBM JSON dump"),
]


@pytest.mark.parametrize(("name", "declared", "says"), WRONG_FORMATS)
def test_a_file_of_another_format_is_named(
    name: str, declared: str, says: str, tmp_path: Path
) -> None:
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
def test_a_joblib_or_pickle_file_declared_otherwise_is_named(
    how: str, declared: str, tmp_path: Path
) -> None:
    path = tmp_path / "model.joblib"
    columns = ["feature_a", "feature_b"]
    PICKLE_WRITERS[how](path, fitted_ridge(columns))
    with pytest.raises(ModelLoadError) as error:
        load_model(spec(declared, "model.joblib", features=columns), path, columns)
    assert 'looks like a pickle or joblib file; use "sklearn" for a saved estimator' in str(
        error.value
    )


# --- sklearn: joblib or pickle files of objects with predict() ---


def _sklearn_on_array(path: Path, features: list[str], seed: int = 0) -> None:
    """A Ridge fitted on a bare array: it records its width, not its feature names."""
    from sklearn.linear_model import Ridge

    x, y = training_rows(features, 500, seed)
    joblib.dump(Ridge().fit(x, y), path)


def _xgb_regressor(path: Path, features: list[str], seed: int = 0) -> None:
    import xgboost

    x, y = training_rows(features, 500, seed)
    model = xgboost.XGBRegressor(n_estimators=20, max_depth=3, n_jobs=1, random_state=seed)
    joblib.dump(model.fit(pd.DataFrame(x, columns=features), y), path)


def _catboost_regressor(path: Path, features: list[str], seed: int = 0) -> None:
    import catboost

    x, y = training_rows(features, 500, seed)
    model = catboost.CatBoostRegressor(
        iterations=20,
        depth=3,
        random_seed=seed,
        thread_count=1,
        verbose=0,
        allow_writing_files=False,
    )
    joblib.dump(model.fit(pd.DataFrame(x, columns=features), y), path, compress=3)


def _write_sklearn(path: Path, features: list[str], seed: int = 0) -> None:
    from devkit.example_models import write_sklearn

    write_sklearn(path, features, seed=seed)


def _write_lgbm_regressor(path: Path, features: list[str], seed: int = 0) -> None:
    from devkit.example_models import write_lgbm_regressor

    write_lgbm_regressor(path, features, seed=seed)


# name: (writer, whether the file records feature names)
ESTIMATORS: dict[str, tuple[Callable[..., None], bool]] = {
    "pipeline": (_write_sklearn, True),
    "lgbm regressor": (_write_lgbm_regressor, True),
    "xgb regressor": (_xgb_regressor, True),
    "catboost regressor": (_catboost_regressor, True),
    "ridge on an array": (_sklearn_on_array, False),
}


def trusted(file: str = "model.joblib", **fields) -> ModelSpec:
    return spec("sklearn", file, trust_pickle=True, **fields)


@pytest.mark.filterwarnings("error")  # scikit-learn warns when names are missing or unexpected
@pytest.mark.parametrize(
    ("name", "with_list"),
    [
        pytest.param(
            name, with_list, id=f"{name}, {'manifest list' if with_list else 'recorded names'}"
        )
        for name, (_, recorded) in ESTIMATORS.items()
        for with_list in ([True, False] if recorded else [True])  # unnamed files need the list
    ],
)
def test_sklearn_predicts_as_the_estimator_does(
    name: str, with_list: bool, small_round: SyntheticRound, tmp_path: Path
) -> None:
    write, names_recorded = ESTIMATORS[name]
    columns = small_round.feature_sets["medium"]
    path = tmp_path / "model.joblib"
    write(path, columns)
    model = load_model(trusted(), path, columns if with_list else None)
    assert model.columns == columns
    rows = live_rows(small_round, columns)
    estimator = joblib.load(path)
    theirs = estimator.predict(pd.DataFrame(rows, columns=columns) if names_recorded else rows)
    np.testing.assert_allclose(predict_in_batches(model, rows), theirs, rtol=1e-6)


def test_sklearn_without_recorded_names_needs_the_manifest_list(tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    _sklearn_on_array(path, FEATURES)
    with pytest.raises(ModelLoadError, match="'model.joblib' does not record its feature names"):
        load_model(trusted(), path, None)
    with pytest.raises(ModelLoadError, match="takes 12 features but its manifest entry gives 11"):
        load_model(trusted(), path, FEATURES[:11])


@pytest.mark.parametrize("name", [n for n, (_, recorded) in ESTIMATORS.items() if recorded])
def test_sklearn_recorded_names_must_match_the_manifest_list(name: str, tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    ESTIMATORS[name][0](path, FEATURES)
    swapped = [FEATURES[0], FEATURES[2], FEATURES[1], *FEATURES[3:]]
    with pytest.raises(ModelLoadError) as error:
        load_model(trusted(), path, swapped)
    assert str(error.value) == (
        "model 'm': 'model.joblib' was trained with 'feature_0001' as feature #2, but its manifest "
        "entry gives 'feature_0002'; the order must match training"
    )
    with pytest.raises(ModelLoadError, match="takes 12 features but its manifest entry gives 13"):
        load_model(trusted(), path, [*FEATURES, "feature_extra"])


def test_lgbm_regressor_on_an_array_has_only_placeholder_names(tmp_path: Path) -> None:
    import lightgbm

    x, y = training_rows(FEATURES, 300, 0)
    path = tmp_path / "model.joblib"
    joblib.dump(lightgbm.LGBMRegressor(n_estimators=5, n_jobs=1, verbose=-1).fit(x, y), path)
    with pytest.raises(ModelLoadError, match="does not record its feature names"):
        load_model(trusted(), path, None)  # Column_0, Column_1, … say nothing
    model = load_model(trusted(), path, FEATURES)
    np.testing.assert_array_equal(model.predict_batch(x), joblib.load(path).predict(x))


class Tripwire:
    """Unpickling it creates the file at `path`: the proof that the pickle was opened."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_an_untrusted_sklearn_file_is_refused_unopened(tmp_path: Path) -> None:
    opened = tmp_path / "opened"
    path = tmp_path / "model.joblib"
    joblib.dump(Tripwire(opened), path)
    with pytest.raises(ModelLoadError) as error:
        load_model(spec("sklearn", "model.joblib"), path, FEATURES)
    assert "loading a pickle runs the code inside it" in str(error.value)
    assert '"trust_pickle": true' in str(error.value)
    assert not opened.exists()
    # The tripwire works: trusted, the file is opened (and what it holds has no predict).
    with pytest.raises(
        ModelLoadError, match=r"holds a _io\.TextIOWrapper, which has no predict\(\) method"
    ):
        load_model(trusted(), path, FEATURES)
    assert opened.exists()


def test_a_pickled_function_is_pointed_to_numerai_pickle(tmp_path: Path) -> None:
    def predict(live_features):
        return live_features

    path = tmp_path / "model.pkl"
    path.write_bytes(cloudpickle.dumps(predict))
    with pytest.raises(ModelLoadError) as error:
        load_model(trusted("model.pkl"), path, FEATURES)
    assert str(error.value).startswith("model 'm': 'model.pkl' holds a ")
    assert "which has no predict() method" in str(error.value)
    assert 'format "numerai_pickle"' in str(error.value)


def test_an_object_without_predict_is_named(tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump({"weights": [1, 2, 3]}, path)
    with pytest.raises(ModelLoadError) as error:
        load_model(trusted(), path, FEATURES)
    assert str(error.value) == (
        "model 'm': 'model.joblib' holds a builtins.dict, which has no predict() method; "
        "expected a fitted estimator or Pipeline"
    )


@pytest.mark.parametrize(
    ("pickled", "says"),
    [
        (
            b"csklearn.moved_away\nModel\n)R.",  # a library's module moved between versions
            "(No module named 'sklearn.moved_away'); it was pickled with other "
            "library versions than these (scikit-learn ",
        ),
        (
            b"c__main__\nMyModel\n)R.",
            "a class defined in the notebook or script that saved it. Save it "
            "with cloudpickle.dump",
        ),
    ],
)
def test_a_pickle_needing_code_this_app_lacks_says_why(
    pickled: bytes, says: str, tmp_path: Path
) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickled)  # protocol 0: GLOBAL module/name, called with no arguments
    with pytest.raises(ModelLoadError) as error:
        load_model(trusted("model.pkl"), path, FEATURES)
    assert str(error.value).startswith("model 'm': 'model.pkl' needs code this app does not have (")
    assert says in str(error.value)


def test_a_pickle_needing_a_module_this_app_lacks_names_it(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(b"cstatsmodels.api\nOLS\n)R.")
    with pytest.raises(ModelLoadError) as error:
        load_model(trusted("model.pkl"), path, FEATURES)
    assert str(error.value).startswith(
        "model 'm': 'model.pkl' needs the module 'statsmodels', which this deployment does not "
        "have (Numerai's runner has statsmodels 0.14."
    )


def test_a_pickle_of_another_scikit_learn_version_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import sklearn

    path = tmp_path / "model.joblib"
    _write_sklearn(path, FEATURES)  # a Pipeline of three estimators, each with its version
    other = ".".join("0" * len(part) for part in sklearn.__version__.split("."))  # same length
    path.write_bytes(path.read_bytes().replace(sklearn.__version__.encode(), other.encode()))
    load_model(trusted(), path, None)
    lines = [r.getMessage() for r in caplog.records if r.name == "shared.formats.sklearn"]
    assert lines == [
        f"model 'm': 'model.joblib': pickled with scikit-learn {other}, loaded with scikit-learn "
        f"{sklearn.__version__}; its predictions may differ"
    ]


def _classifier(path: Path, labels: Callable[[np.ndarray], np.ndarray]):
    from sklearn.linear_model import LogisticRegression

    x, y = training_rows(FEATURES, 600, 1)
    model = LogisticRegression(max_iter=500).fit(pd.DataFrame(x, columns=FEATURES), labels(y))
    joblib.dump(model, path)
    return model, pd.DataFrame(x[:100], columns=FEATURES)


def test_predict_proba_of_two_classes_is_the_probability_of_class_1(tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    classifier, rows = _classifier(path, lambda y: (y > 0.5).astype(int))
    model = load_model(trusted(method="predict_proba"), path, None)
    ours = model.predict_batch(rows.to_numpy(np.float32))
    np.testing.assert_allclose(ours, classifier.predict_proba(rows)[:, 1])


def test_predict_proba_of_numeric_classes_is_the_expected_class_value(tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    # Numerai's five target values as scikit-learn takes classes: 0 to 4
    classifier, rows = _classifier(path, lambda y: np.round(y * 4).astype(int))
    assert len(classifier.classes_) == 5
    model = load_model(trusted(method="predict_proba"), path, None)
    expected = classifier.predict_proba(rows) @ classifier.classes_
    np.testing.assert_allclose(model.predict_batch(rows.to_numpy(np.float32)), expected)


def test_predict_proba_of_named_classes_is_the_probability_of_the_last(tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    classifier, rows = _classifier(path, lambda y: np.where(y > 0.5, "up", "down"))
    assert list(classifier.classes_) == ["down", "up"]
    model = load_model(trusted(method="predict_proba"), path, None)
    ours = model.predict_batch(rows.to_numpy(np.float32))
    np.testing.assert_allclose(ours, classifier.predict_proba(rows)[:, 1])


@pytest.mark.parametrize(
    ("classes", "weights"),
    [
        (np.array([0, 1]), [0, 1]),
        (np.array([0.0, 0.25, 0.5, 0.75, 1.0]), [0, 0.25, 0.5, 0.75, 1]),
        (np.array([-1, 0, 1], dtype=object), [-1, 0, 1]),  # numbers in an object array
        (np.array([False, True]), [0, 1]),
        (np.array(["down", "flat", "up"]), [0, 0, 1]),
        (np.array(["0", "1"], dtype=object), [0, 1]),  # strings: the last class, not their values
    ],
)
def test_predict_proba_weights_by_kind_of_class(classes: np.ndarray, weights: list[float]) -> None:
    from shared.formats.sklearn import expected_value_weights

    found = expected_value_weights(trusted(method="predict_proba"), classes)
    np.testing.assert_array_equal(found, weights)


def test_predict_proba_on_a_regressor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    _write_sklearn(path, FEATURES)
    with pytest.raises(ModelLoadError) as error:
        load_model(trusted(method="predict_proba"), path, None)
    assert str(error.value) == (
        "model 'm': 'model.joblib' holds a sklearn.pipeline.Pipeline, which has no predict_proba() "
        'method; it is not a classifier: use "method": "predict"'
    )


# --- xgboost: native .json and .ubj models ---


def xgboost_truth(path: Path, rows: np.ndarray, columns: list[str] | None) -> np.ndarray:
    """XGBoost's own prediction: a DMatrix (with the names the booster expects), predict()."""
    import xgboost

    booster = xgboost.Booster(model_file=str(path))
    return booster.predict(xgboost.DMatrix(rows, feature_names=columns))


@pytest.mark.parametrize("with_list", [True, False], ids=["manifest list", "recorded names"])
@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_xgboost_predicts_as_xgboost_does(
    suffix: str, with_list: bool, small_round: SyntheticRound, tmp_path: Path
) -> None:
    columns = small_round.feature_sets["medium"]
    path = tmp_path / f"model{suffix}"
    write_xgboost(path, columns)
    model = load_model(spec("xgboost", path.name), path, columns if with_list else None)
    assert model.columns == columns
    rows = live_rows(small_round, columns)
    # inplace_predict, batch by batch, gives exactly what predict(DMatrix) gives.
    np.testing.assert_array_equal(
        predict_in_batches(model, rows), xgboost_truth(path, rows, columns)
    )


def test_an_xgb_regressor_saved_natively_predicts_as_itself(
    small_round: SyntheticRound, tmp_path: Path
) -> None:
    columns = small_round.feature_sets["small"]
    pickled = tmp_path / "model.joblib"
    _xgb_regressor(pickled, columns)
    regressor = joblib.load(pickled)
    path = tmp_path / "model.json"
    # XGBRegressor.save_model itself fails with scikit-learn >= 1.8 on XGBoost 3.0
    # (`_estimator_type` undefined); its booster writes the same model.
    regressor.get_booster().save_model(str(path))
    model = load_model(spec("xgboost", "model.json"), path, None)
    rows = live_rows(small_round, columns)
    expected = regressor.predict(pd.DataFrame(rows, columns=columns))
    np.testing.assert_array_equal(predict_in_batches(model, rows), expected)


def _early_stopped(path: Path, sklearn_api: bool):
    """A model whose early stopping kept fewer trees than were trained, saved by either API."""
    import json

    import xgboost

    x, _ = training_rows(FEATURES, 400, 3)
    y = np.random.default_rng(3).random(400)  # noise: validation loss stops improving at once
    train, valid = slice(0, 300), slice(300, 400)
    if sklearn_api:
        regressor = xgboost.XGBRegressor(
            n_estimators=50, learning_rate=0.3, n_jobs=1, early_stopping_rounds=3, random_state=0
        )
        regressor.fit(x[train], y[train], eval_set=[(x[valid], y[valid])], verbose=False)
        booster = regressor.get_booster()
        # What XGBRegressor.save_model writes; it fails itself under scikit-learn >= 1.8
        # with XGBoost 3.0 (`_estimator_type` undefined).
        booster.set_attr(scikit_learn=json.dumps({"_estimator_type": "regressor"}))
        booster.save_model(str(path))
        return regressor.predict(x), x
    params = {"eta": 0.3, "nthread": 1, "seed": 0}
    booster = xgboost.train(
        params,
        xgboost.DMatrix(x[train], y[train]),
        50,
        early_stopping_rounds=3,
        evals=[(xgboost.DMatrix(x[valid], y[valid]), "valid")],
        verbose_eval=False,
    )
    booster.save_model(str(path))
    return booster.predict(xgboost.DMatrix(x)), x


@pytest.mark.parametrize("sklearn_api", [True, False], ids=["XGBRegressor", "xgboost.train"])
def test_an_early_stopped_xgboost_model_predicts_as_the_api_that_saved_it(
    sklearn_api: bool, tmp_path: Path
) -> None:
    import xgboost

    path = tmp_path / "model.json"
    expected, x = _early_stopped(path, sklearn_api)
    booster = xgboost.Booster(model_file=str(path))
    assert int(booster.attr("best_iteration")) + 1 < booster.num_boosted_rounds()
    model = load_model(spec("xgboost", "model.json"), path, FEATURES)
    np.testing.assert_array_equal(model.predict_batch(x), expected)


def test_xgboost_without_recorded_names_needs_the_manifest_list(tmp_path: Path) -> None:
    import xgboost

    x, y = training_rows(FEATURES, 300, 0)
    path = tmp_path / "model.json"
    xgboost.train({"nthread": 1, "max_depth": 3}, xgboost.DMatrix(x, y), 10).save_model(str(path))
    with pytest.raises(ModelLoadError, match="'model.json' does not record its feature names"):
        load_model(spec("xgboost", "model.json"), path, None)
    with pytest.raises(ModelLoadError, match="takes 12 features but its manifest entry gives 11"):
        load_model(spec("xgboost", "model.json"), path, FEATURES[:11])
    model = load_model(spec("xgboost", "model.json"), path, FEATURES)
    np.testing.assert_array_equal(model.predict_batch(x), xgboost_truth(path, x, None))


def test_xgboost_recorded_names_must_match_the_manifest_list(tmp_path: Path) -> None:
    path = tmp_path / "model.ubj"
    write_xgboost(path, FEATURES)
    swapped = [*FEATURES[:10], FEATURES[11], FEATURES[10]]
    with pytest.raises(ModelLoadError) as error:
        load_model(spec("xgboost", "model.ubj"), path, swapped)
    assert str(error.value) == (
        "model 'm': 'model.ubj' was trained with 'feature_0010' as feature #11, but its manifest "
        "entry gives 'feature_0011'; the order must match training"
    )
    with pytest.raises(ModelLoadError, match="takes 12 features but its manifest entry gives 3"):
        load_model(spec("xgboost", "model.ubj"), path, FEATURES[:3])


# --- catboost: .cbm models ---


@pytest.mark.parametrize("with_list", [True, False], ids=["manifest list", "recorded names"])
def test_catboost_predicts_as_catboost_does(
    with_list: bool, small_round: SyntheticRound, tmp_path: Path
) -> None:
    import catboost

    columns = small_round.feature_sets["medium"]
    path = tmp_path / "model.cbm"
    write_catboost(path, columns)
    model = load_model(spec("catboost", "model.cbm"), path, columns if with_list else None)
    assert model.columns == columns
    rows = live_rows(small_round, columns)
    regressor = catboost.CatBoostRegressor().load_model(str(path))
    expected = regressor.predict(pd.DataFrame(rows, columns=columns))
    np.testing.assert_array_equal(predict_in_batches(model, rows), expected)


def _catboost_fit(
    path: Path, labels: np.ndarray | None = None, **params
) -> tuple[object, np.ndarray]:
    """A small CatBoost model fitted on a bare array (so it records "0", "1", … as names)."""
    import catboost

    x, y = training_rows(FEATURES, 400, 2)
    kind = catboost.CatBoostRegressor if labels is None else catboost.CatBoostClassifier
    model = kind(
        iterations=10,
        depth=3,
        random_seed=0,
        thread_count=1,
        verbose=0,
        allow_writing_files=False,
        **params,
    )
    model.fit(x if "cat_features" not in params else x.astype(int), y if labels is None else labels)
    model.save_model(str(path))
    return model, x


def test_catboost_without_recorded_names_needs_the_manifest_list(tmp_path: Path) -> None:
    path = tmp_path / "model.cbm"
    regressor, x = _catboost_fit(path)
    with pytest.raises(ModelLoadError, match="'model.cbm' does not record its feature names"):
        load_model(spec("catboost", "model.cbm"), path, None)
    with pytest.raises(ModelLoadError, match="takes 12 features but its manifest entry gives 13"):
        load_model(spec("catboost", "model.cbm"), path, [*FEATURES, "feature_extra"])
    model = load_model(spec("catboost", "model.cbm"), path, FEATURES)
    np.testing.assert_array_equal(model.predict_batch(x), regressor.predict(x))


def test_catboost_recorded_names_must_match_the_manifest_list(tmp_path: Path) -> None:
    path = tmp_path / "model.cbm"
    write_catboost(path, FEATURES)
    renamed = [*FEATURES[:4], "feature_9999", *FEATURES[5:]]
    with pytest.raises(ModelLoadError) as error:
        load_model(spec("catboost", "model.cbm"), path, renamed)
    assert str(error.value) == (
        "model 'm': 'model.cbm' was trained with 'feature_0004' as feature #5, but its manifest "
        "entry gives 'feature_9999'; the order must match training"
    )


def test_a_catboost_binary_classifier_predicts_its_raw_log_odds(tmp_path: Path) -> None:
    path = tmp_path / "model.cbm"
    x, y = training_rows(FEATURES, 400, 2)
    classifier, x = _catboost_fit(path, labels=(y > 0.5).astype(int))
    model = load_model(spec("catboost", "model.cbm"), path, FEATURES)
    raw = model.predict_batch(x)
    np.testing.assert_array_equal(raw, classifier.predict(x, prediction_type="RawFormulaVal"))
    # Ranked, as by default, the log-odds order rows as P(class 1) does.
    probability = classifier.predict_proba(x)[:, 1]
    np.testing.assert_allclose(1 / (1 + np.exp(-raw)), probability)


def test_a_multiclass_catboost_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.cbm"
    _, y = training_rows(FEATURES, 400, 2)
    _catboost_fit(path, labels=np.round(y * 4).astype(int), loss_function="MultiClass")
    with pytest.raises(ModelLoadError) as error:
        load_model(spec("catboost", "model.cbm"), path, FEATURES)
    assert str(error.value) == (
        "model 'm': 'model.cbm' predicts 5 values per row (loss MultiClass); only models with one "
        "output (regressors, binary classifiers) are supported"
    )


def test_a_catboost_model_with_categorical_features_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.cbm"
    _catboost_fit(path, cat_features=[0, 3])
    with pytest.raises(ModelLoadError, match=r"'model.cbm' has categorical features \(0, 3\)"):
        load_model(spec("catboost", "model.cbm"), path, FEATURES)


# --- onnx: a graph whose input width is left open ---


def _names(count: int) -> list[str]:
    return [f"feature_{i:04d}" for i in range(count)]


def _onnx(file: str, count: int) -> ModelSpec:
    return spec("onnx", file, features=_names(count))


def _scaled_linear(path: Path, width: int) -> None:
    """Features scaled, then MatMul: the input meets the weights only through another node."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["features", "scale"], ["scaled"]),
            helper.make_node("MatMul", ["scaled", "w"], ["prediction"]),
        ],
        "scaled",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, "n"])],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, [None, 1])],
        initializer=[
            numpy_helper.from_array(np.full(width, 0.5, np.float32), "scale"),
            numpy_helper.from_array(np.ones((width, 1), np.float32), "w"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_an_open_width_onnx_graph_is_checked_against_the_manifest_by_its_weights(
    tmp_path: Path,
) -> None:
    write_onnx_linear(tmp_path / "ten.onnx", np.ones(10), 0.0, open_width=True)
    with pytest.raises(ModelLoadError) as error:
        load_model(_onnx("ten.onnx", 24), tmp_path / "ten.onnx", _names(24))
    assert str(error.value) == (
        "model 'm': 'ten.onnx' takes 10 features but its manifest entry gives 24; check 'features'"
    )
    assert load_model(_onnx("ten.onnx", 10), tmp_path / "ten.onnx", _names(10)).warnings == []


def test_an_open_width_onnx_graph_is_checked_by_shape_inference(tmp_path: Path) -> None:
    _scaled_linear(tmp_path / "scaled.onnx", 10)
    with pytest.raises(ModelLoadError) as error:
        load_model(_onnx("scaled.onnx", 24), tmp_path / "scaled.onnx", _names(24))
    assert str(error.value).startswith(
        "model 'm': 'scaled.onnx' does not take 24 features, its manifest entry's count: the graph's "
        "shapes do not fit that width ("
    )
    model = load_model(_onnx("scaled.onnx", 10), tmp_path / "scaled.onnx", _names(10))
    assert model.warnings == []  # 10 fits and 11 does not: the width is known after all
    np.testing.assert_allclose(model.predict_batch(np.full((3, 10), 2, np.float32)), [10.0] * 3)


def test_an_onnx_graph_that_does_not_say_its_width_runs_with_a_warning(tmp_path: Path) -> None:
    write_onnx_stump(tmp_path / "stump.onnx", feature=3)
    model = load_model(_onnx("stump.onnx", 24), tmp_path / "stump.onnx", _names(24))
    assert model.warnings == [
        (
            "model 'm': the ONNX model's input width is dynamic and its graph does not say how many features "
            "it takes; the manifest's 24 features were fed unchecked"
        )
    ]
    rows = np.zeros((2, 24), np.float32)
    rows[1, 3] = 4
    np.testing.assert_allclose(model.predict_batch(rows), [0.25, 0.75])


# --- the engine, with the example writers' manifest ---

NEW_WRITERS = ["sklearn", "lgbm_regressor", "xgboost", "catboost"]


def library_predictions(entry: dict, directory: Path, rows: pd.DataFrame) -> np.ndarray:
    """Each library's own predictions for the rows, no app code involved."""
    path = directory / entry["file"]
    if entry["format"] == "sklearn":
        return joblib.load(path).predict(rows)
    if entry["format"] == "xgboost":
        return xgboost_truth(path, rows.to_numpy(np.float32), list(rows.columns))
    import catboost

    return catboost.CatBoostRegressor().load_model(str(path)).predict(rows)


@pytest.mark.parametrize("writer", NEW_WRITERS)
def test_the_engine_runs_each_new_format(
    writer: str, small_round: SyntheticRound, tmp_path: Path
) -> None:
    from devkit.example_models import write_example_models
    from shared.worker.engine import run_model
    from shared.worker.protocol import PREDICTIONS_FILE, WorkRequest

    [entry] = write_example_models(
        tmp_path / "models", small_round.feature_sets, [("new_model", writer, "medium")]
    )["models"]
    output = tmp_path / "out"
    output.mkdir()
    request = WorkRequest(
        spec=ModelSpec.model_validate(entry),
        model_path=tmp_path / "models" / entry["file"],
        live_path=small_round.live_path,
        features_path=small_round.features_path,
        benchmark_path=small_round.benchmark_path,
        data_version="v5.2",
        batch_rows=64,
        output_dir=output,
    )
    outcome = run_model(request)
    assert outcome.ok, outcome.error
    submitted = pd.read_csv(output / PREDICTIONS_FILE)
    assert list(submitted["id"]) == small_round.ids
    columns = small_round.feature_sets["medium"]
    rows = pd.DataFrame(live_rows(small_round, columns), columns=columns)
    expected = pd.Series(library_predictions(entry, tmp_path / "models", rows)).rank(pct=True)
    np.testing.assert_allclose(submitted["prediction"], expected)
