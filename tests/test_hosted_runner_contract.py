"""A Numerai upload pickle predicts here exactly as Numerai's hosted runner runs it.

Each test states one rule of the runner (`numerai/numerai-predict`, predict.py;
see shared/formats/numerai_pickle.py) and checks the product against it, through
the real worker processes. The functions report what they saw through files,
since they run in another process.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest

from devkit.local_stack import LocalStack
from devkit.pickles import find_python, pickle_with
from devkit.synthetic import SyntheticRound, write_round
from shared.formats.runner_packages import PACKAGES
from shared.manifest import ModelSpec
from shared.worker.protocol import ModelOutcome
from tests.support import line, post_test_run, predict, submission


def spec(name: str = "upload", **fields) -> ModelSpec:
    return ModelSpec(
        name=name, file=f"{name}.pkl", format="numerai_pickle", trust_pickle=True, **fields
    )


def run_pickles(
    round_: SyntheticRound, functions: dict[str, object], work: Path, **fields
) -> dict[str, ModelOutcome]:
    work.mkdir(parents=True, exist_ok=True)
    models = []
    for name, function in functions.items():
        path = work / f"{name}.pkl"
        path.write_bytes(cloudpickle.dumps(function))
        models.append((spec(name, **fields), path))
    return predict(round_, models, work)


def first_feature_ranked(live):
    return live[["feature_0000"]].rank(pct=True).set_axis(["prediction"], axis=1)


@pytest.fixture(scope="module")
def holes(tmp_path_factory: pytest.TempPathFactory) -> SyntheticRound:
    """A round with missing values, as Numerai's live data sometimes has."""
    return write_round(
        tmp_path_factory.mktemp("holes"), rows=300, n_features=24, missing_fraction=0.1, seed=5
    )


def test_live_features_are_the_whole_parquet_as_pandas_reads_it(
    holes: SyntheticRound, tmp_path: Path
) -> None:
    record, live_path = tmp_path / "seen.json", str(holes.live_path)

    def predict_fn(live_features):
        import pandas

        expected = pandas.read_parquet(live_path)
        pandas.testing.assert_frame_equal(live_features, expected)  # NaN in place, dtypes as stored
        record.write_text(
            json.dumps(
                {
                    "columns": list(live_features.columns)[:3],
                    "index": live_features.index.name,
                    "nan": int(live_features.isna().sum().sum()),
                }
            )
        )
        return (
            live_features[["feature_0000"]]
            .fillna(0.5)
            .rank(pct=True)
            .set_axis(["prediction"], axis=1)
        )

    outcomes = run_pickles(holes, {"whole": predict_fn}, tmp_path)
    assert outcomes["whole"].ok, outcomes["whole"].error
    seen = json.loads(record.read_text())
    assert seen["columns"] == ["era", "data_type", "feature_0000"]
    assert seen["index"] == "id" and seen["nan"] > 0


def test_two_parameters_get_the_whole_benchmark_file_and_defaults_count(
    small_round: SyntheticRound, tmp_path: Path
) -> None:
    record, benchmark_path = tmp_path / "benchmark.json", str(small_round.benchmark_path)

    def predict_fn(
        live_features, live_benchmark_models=None
    ):  # a default still counts as a parameter
        import pandas

        pandas.testing.assert_frame_equal(
            live_benchmark_models, pandas.read_parquet(benchmark_path)
        )
        record.write_text(json.dumps(list(live_benchmark_models.columns)))
        return live_benchmark_models.iloc[:, :1].rename(columns=lambda _: "prediction")

    outcome = run_pickles(small_round, {"blend": predict_fn}, tmp_path)["blend"]
    assert outcome.ok, outcome.error
    assert json.loads(record.read_text()) == [
        "v53_lgbm_ender20",
        "v53_lgbm_cyrusd20",
    ]  # v5.3: only v53_*


@pytest.mark.parametrize(
    "function",
    [lambda live: first_feature_ranked(live), lambda *args: first_feature_ranked(args[0])],
)
def test_one_parameter_gets_the_live_features_only(
    small_round: SyntheticRound, tmp_path: Path, function
) -> None:
    outcome = run_pickles(small_round, {"one": function}, tmp_path)["one"]
    assert outcome.ok, outcome.error


def test_other_parameter_counts_are_refused(small_round: SyntheticRound, tmp_path: Path) -> None:
    outcomes = run_pickles(
        small_round, {"three": lambda a, b, c: None, "none": lambda: None}, tmp_path
    )
    assert outcomes["three"].error == (
        "model 'three': its function takes 3 parameters; Numerai's runner calls it with one (live_features) "
        "or two (live_features, live_benchmark_models), counting parameters that have defaults"
    )
    assert "takes 0 parameters" in outcomes["none"].error


@pytest.mark.parametrize(
    ("returns", "message"),
    [
        (lambda live: None, "its function returned None; it must return a DataFrame"),
        (
            lambda live: first_feature_ranked(live)["prediction"],
            "its function returned Series; Numerai's runner accepts exactly a pandas DataFrame",
        ),
        (
            lambda live: type("Frame", (pd.DataFrame,), {})(first_feature_ranked(live)),
            "its function returned Frame",
        ),
        (
            lambda live: first_feature_ranked(live).iloc[:0],
            "its function returned an empty DataFrame",
        ),
        (
            lambda live: first_feature_ranked(live).assign(extra=np.nan),
            "its function returned NaN in 503 rows",
        ),
        (
            lambda live: first_feature_ranked(live) * 2,
            "its function returned values outside [0, 1] in column 'prediction'",
        ),
    ],
)
def test_the_runners_output_checks_refuse_what_it_refuses(
    small_round: SyntheticRound, tmp_path: Path, returns, message: str
) -> None:
    outcome = run_pickles(small_round, {"bad": returns}, tmp_path)["bad"]
    assert not outcome.ok
    assert outcome.error.startswith(f"model 'bad': {message}")


def test_feature_values_are_not_checked_before_a_pickle_is_called(
    small_round: SyntheticRound, example_models: Path, tmp_path: Path
) -> None:
    # The runner hands live.parquet over as it is and uploads what the function returns; checks
    # on feature values belong to the formats the product feeds itself (here LightGBM's).
    column = small_round.feature_sets["medium"][-1]
    frame = pd.read_parquet(small_round.live_path)
    frame.loc[frame.index[7], column] = 5
    bad = SyntheticRound(tmp_path / "bad", small_round.feature_sets, small_round.ids)
    shutil.copytree(small_round.directory, bad.directory)
    frame.to_parquet(bad.live_path)
    lightgbm = ModelSpec(name="demo_lightgbm", file="demo_lightgbm.txt", format="lightgbm")
    upload = spec("reads_one_column")
    path = tmp_path / "reads_one_column.pkl"
    path.write_bytes(cloudpickle.dumps(first_feature_ranked))
    outcomes = predict(
        bad, [(upload, path), (lightgbm, example_models / "demo_lightgbm.txt")], tmp_path
    )
    accepted = outcomes["reads_one_column"]
    assert accepted.ok, accepted.error
    assert accepted.csv == first_feature_ranked(pd.read_parquet(bad.live_path)).to_csv()
    assert outcomes["demo_lightgbm"].error.endswith(f"{column} (5)")


def test_the_submission_is_the_runners_csv_with_the_index_and_is_not_ranked(
    small_round: SyntheticRound, tmp_path: Path
) -> None:
    def raw_scores(live):
        import pandas

        values = (live["feature_0000"].to_numpy() + 1) / 10  # 0.1 .. 0.5: valid, and not ranks
        return pandas.DataFrame({"prediction": values}, index=live.index)

    outcome = run_pickles(small_round, {"raw": raw_scores}, tmp_path)["raw"]
    assert outcome.ok, outcome.error
    live = pd.read_parquet(small_round.live_path)
    assert (
        outcome.csv
        == pd.DataFrame(
            {"prediction": (live["feature_0000"].to_numpy() + 1) / 10}, index=live.index
        ).to_csv()
    )


def test_a_pickle_calling_numerai_tools_gets_the_runners_version(
    small_round: SyntheticRound, tmp_path: Path
) -> None:
    # cloudpickle stores numerai_tools' functions by reference: the pickle calls the version
    # installed here. In the runner's 0.4.3 filter_sort_top_bottom returns one Series (0.5.0: a
    # tuple, and this pickle fails).
    from numerai_tools.scoring import filter_sort_top_bottom

    def top_bottom(live):
        import pandas

        scores = live["feature_0000"].rank(pct=True, method="first")
        kept = filter_sort_top_bottom(scores, 100)
        prediction = pandas.Series(0.5, index=live.index)
        prediction[live.index.isin(kept.index)] = scores[kept.index]
        return prediction.to_frame("prediction")

    outcome = run_pickles(small_round, {"tools": top_bottom}, tmp_path)["tools"]
    assert outcome.ok, outcome.error
    live = pd.read_parquet(small_round.live_path)
    assert outcome.csv == top_bottom(live).to_csv()
    assert (submission(outcome)["prediction"] != 0.5).sum() == 200


def test_numerais_upload_rules_still_apply_after_the_runners_checks(
    small_round: SyntheticRound, tmp_path: Path
) -> None:
    # The runner accepts any column name; Numerai's upload then wants 'prediction'.
    outcome = run_pickles(
        small_round,
        {"named": lambda live: first_feature_ranked(live).set_axis(["score"], axis=1)},
        tmp_path,
    )["named"]
    assert not outcome.ok
    assert "prediction" in outcome.error
    assert submission(outcome).columns.tolist() == ["id", "score"]  # kept, for inspection


@pytest.mark.parametrize(
    ("returns", "index"),
    [
        (lambda live: first_feature_ranked(live).rename_axis(None), "is unnamed"),
        (lambda live: first_feature_ranked(live).rename_axis("row"), "is named 'row'"),
        (
            lambda live: first_feature_ranked(live).reset_index(drop=True),
            "is a RangeIndex (0, 1, 2, …)",
        ),
        (
            lambda live: first_feature_ranked(live).reset_index(drop=True).rename_axis("id"),
            "is a RangeIndex (0, 1, 2, …)",
        ),
    ],
)
def test_an_output_whose_index_is_not_the_live_ids_named_id_is_told_the_fix(
    small_round: SyntheticRound, tmp_path: Path, returns, index: str
) -> None:
    # The runner uploads such a CSV and Numerai refuses it with only "headers must be one of ['id']".
    outcome = run_pickles(small_round, {"lost_ids": returns}, tmp_path)["lost_ids"]
    assert not outcome.ok
    assert outcome.error.startswith(
        f"model 'lost_ids': its function returned a DataFrame whose index {index}; the index "
        "must be the live ids, named 'id'"
    )
    assert "index=live_features.index" in outcome.error and ".rename_axis('id')" in outcome.error
    assert outcome.csv == returns(pd.read_parquet(small_round.live_path)).to_csv()  # kept


def test_fill_and_rank_only_when_the_manifest_asks(holes: SyntheticRound, tmp_path: Path) -> None:
    def passthrough(live):
        return (
            live[["feature_0000"]].set_axis(["prediction"], axis=1) / 4
        )  # NaN stays NaN unless filled

    default = run_pickles(holes, {"plain": passthrough}, tmp_path / "a")["plain"]
    asked = run_pickles(
        holes, {"asked": passthrough}, tmp_path / "b", fill_missing=2.0, output="rank"
    )["asked"]
    assert default.error.startswith("model 'plain': its function returned NaN in")
    assert asked.ok, asked.error
    expected = (pd.read_parquet(holes.live_path)["feature_0000"].fillna(2.0) / 4).rank(pct=True)
    np.testing.assert_allclose(submission(asked)["prediction"], expected.to_numpy())


def test_a_pickle_is_not_opened_without_the_opt_in(
    small_round: SyntheticRound, tmp_path: Path
) -> None:
    opened = tmp_path / "opened"

    class Tripwire:
        def __reduce__(self):
            return (Path.touch, (opened,))  # would run on unpickling

    path = tmp_path / "trap.pkl"
    path.write_bytes(cloudpickle.dumps(Tripwire()))
    untrusted = ModelSpec(name="trap", file="trap.pkl", format="numerai_pickle")
    outcome = predict(small_round, [(untrusted, path)], tmp_path)["trap"]
    assert "loading a pickle runs the code inside it" in outcome.error
    assert '"trust_pickle": true' in outcome.error
    assert not opened.exists()


def test_a_pickle_takes_no_feature_list() -> None:
    with pytest.raises(ValueError, match="gets every column of live.parquet, as on Numerai"):
        ModelSpec(
            name="x", file="x.pkl", format="numerai_pickle", features="small", trust_pickle=True
        )


RANKS_FIRST_FEATURE = """
def predict(live_features):
    import pandas
    ranked = live_features["feature_0000"].rank(pct=True)
    return pandas.DataFrame({"prediction": ranked}, index=live_features.index)
"""
RUNNING = f"{sys.version_info.major}.{sys.version_info.minor}"


def other_python(version: str) -> list[str]:
    """Python `version`'s command; the test is skipped where it is missing or is this one."""
    if version == RUNNING:
        pytest.skip(f"the pickle is built on {version}, which runs this test")
    try:
        return find_python(version)
    except RuntimeError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("version", [v for v in ("3.10", "3.11", "3.12", "3.13") if v != RUNNING])
def test_a_pickle_built_on_another_python_is_named_before_it_is_loaded(
    small_round: SyntheticRound, example_models: Path, tmp_path: Path, version: str
) -> None:
    path = pickle_with(other_python(version), RANKS_FIRST_FEATURE, tmp_path / "other.pkl")
    models = [
        (spec("other"), path),
        (
            ModelSpec(name="demo_onnx", file="demo_onnx.onnx", format="onnx", features="small"),
            example_models / "demo_onnx.onnx",
        ),
    ]
    outcomes = predict(small_round, models, tmp_path)
    assert outcomes["demo_onnx"].ok  # the other model is untouched
    fix = (
        f"set PYTHON_VERSION={version} (azd env set PYTHON_VERSION {version}) or save the model on {RUNNING}"
        if version != "3.10"
        else f"save the model on {RUNNING} (a deployment can run 3.11, 3.12, 3.13)"
    )
    assert outcomes["other"].error == (
        f"model 'other': 'other.pkl' was built on Python {version}; this deployment runs {RUNNING}: {fix}"
    )


def test_a_pickle_built_on_this_python_runs(small_round: SyntheticRound, tmp_path: Path) -> None:
    path = pickle_with(find_python(RUNNING), RANKS_FIRST_FEATURE, tmp_path / "here.pkl")
    outcome = predict(small_round, [(spec("here"), path)], tmp_path)["here"]
    assert outcome.ok, outcome.error


def test_a_failure_while_calling_a_pickle_of_an_untold_python_names_the_likely_cause(
    small_round: SyntheticRound, tmp_path: Path
) -> None:
    # Three instructions that read as 3.11 or 3.12 bytecode too, meaning something else there.
    source = "predict = lambda live_features: live_features\n"
    path = pickle_with(other_python("3.13"), source, tmp_path / "untold.pkl")
    error = predict(small_round, [(spec("untold"), path)], tmp_path)["untold"].error
    assert error.startswith("model 'untold': its function raised SystemError: "), error
    assert error.endswith(
        f"a pickle built on another Python version does this — this app runs Python {RUNNING}: "
        f"save the model on {RUNNING}, or set PYTHON_VERSION to the Python that saved it "
        f"({', '.join(v for v in ('3.11', '3.12', '3.13') if v != RUNNING)}; azd env set PYTHON_VERSION …)"
    ), error


@pytest.mark.parametrize(
    ("module", "advice"),
    [
        (
            "statsmodels.api",
            "(Numerai's runner has statsmodels {statsmodels}); add statsmodels=={statsmodels} "
            "to requirements.txt and deploy again",
        ),
        ("torch", "(Numerai's runner has torch {torch}); export it to ONNX (see README)"),
        ("no_such_module_anywhere", "(nor does Numerai's runner); save the model without it"),
    ],
)
def test_a_missing_module_is_named_with_whether_numerais_runner_has_it(
    small_round: SyntheticRound, tmp_path: Path, module: str, advice: str
) -> None:
    versions = {name: PACKAGES[name].versions[RUNNING] for name in ("statsmodels", "torch")}
    top = module.split(".")[0]
    # Imported when called, and named in the pickle, so needed when loaded.
    when_called = tmp_path / "called.pkl"
    when_called.write_bytes(
        cloudpickle.dumps(eval(f"lambda live_features: __import__('{module}')"))
    )
    when_loaded = tmp_path / "loaded.pkl"
    when_loaded.write_bytes(f"c{module}\nthing\n.".encode())
    outcomes = predict(
        small_round, [(spec("called"), when_called), (spec("loaded"), when_loaded)], tmp_path
    )
    for name in ("called", "loaded"):
        assert outcomes[name].error == (
            f"model '{name}': '{name}.pkl' needs the module '{top}', which this deployment does "
            f"not have {advice.format(**versions)}"
        )


def test_the_http_test_run_names_the_python_that_built_a_pickle(
    deployed: LocalStack, tmp_path: Path
) -> None:
    other = "3.12" if RUNNING == "3.13" else "3.13"
    built = pickle_with(
        other_python(other),
        "predict = lambda live_features: live_features[['era']]\n",
        tmp_path / "p.pkl",
    )
    container = deployed.blob_service.get_container_client(deployed.models_container)
    container.upload_blob("demo_upload.pkl", built.read_bytes(), overwrite=True)
    report = json.loads(post_test_run(params={"models": "demo_upload"}).get_body())
    assert line(report, "demo_upload")["error"] == (
        f"model 'demo_upload': 'demo_upload.pkl' was built on Python {other}; this deployment runs "
        f"{RUNNING}: set PYTHON_VERSION={other} (azd env set PYTHON_VERSION {other}) or save the "
        f"model on {RUNNING}"
    )
