"""Upload pickles run here as on Numerai's hosted runner: same decisions, same CSV bytes.

`runner_predict` follows numerai-predict's `predict.py` (numerai/numerai-predict at
shared.formats.runner_packages.RUNNER_COMMIT) step by step, with only the network
replaced: the model and the round are local files, and the upload is the CSV
text it would post. Each pickle style is built as a participant builds it
(`__main__` of a Python of its own, through devkit.pickles), then run through
that copy of the runner, in a forked process since a pickle of another Python
can crash it, and through the product's workers. Where the product refuses what
the runner accepts, it is on purpose: Numerai's upload rules (numerai-tools'
`validate_submission_numerai`) refuse that CSV when it is uploaded, and
`ON_PURPOSE` says which rule.
"""

from __future__ import annotations

import faulthandler
import inspect
import json
import multiprocessing
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from devkit.pickles import find_python, pickle_many
from devkit.synthetic import SyntheticRound
from shared.manifest import ModelSpec
from tests.support import predict

RUNNING = f"{sys.version_info.major}.{sys.version_info.minor}"

_FIRST = 'live_features[["feature_0000"]]'
# Styles the runner accepts (and so does the product, CSV for CSV).
ACCEPTED = {
    "one_parameter": f"""
def predict(live_features):
    return {_FIRST}.rank(pct=True).set_axis(["prediction"], axis=1)
""",
    "two_parameters_blend": """
def predict(live_features, live_benchmark_models):
    import pandas as pd
    benchmark = live_benchmark_models.iloc[:, 0].reindex(live_features.index).fillna(0.5)
    mine = live_features["feature_0000"].rank(pct=True)
    return pd.DataFrame({"prediction": (0.5 * benchmark.rank(pct=True) + 0.5 * mine)})
""",
    "defaulted_second_parameter": """
def predict(live_features, live_benchmark_models=None):
    return live_benchmark_models.iloc[:, :1].rank(pct=True).set_axis(["prediction"], axis=1)
""",
    "raw_scores_unranked": """
import pandas as pd
def predict(live_features):
    values = (live_features["feature_0001"].astype(float) + 1) / 10
    return pd.DataFrame({"prediction": values}, index=live_features.index)
""",
    "per_era_rank_with_era_column": """
def predict(live_features):
    ranked = live_features.groupby("era")["feature_0002"].rank(pct=True)
    return ranked.to_frame("prediction")
""",
    "sklearn_model_in_closure": """
import numpy as np, pandas as pd
from sklearn.linear_model import Ridge
features = [f"feature_{i:04d}" for i in range(8)]
rng = np.random.default_rng(0)
model = Ridge().fit(rng.integers(0, 5, (300, 8)), rng.random(300))
def predict(live_features):
    scores = model.predict(live_features[features].to_numpy())
    return pd.Series(scores, index=live_features.index).rank(pct=True).to_frame("prediction")
""",
    "lightgbm_model_in_closure": """
import numpy as np, pandas as pd
from lightgbm import LGBMRegressor
features = [f"feature_{i:04d}" for i in range(8)]
rng = np.random.default_rng(1)
model = LGBMRegressor(n_estimators=5, verbose=-1).fit(
    pd.DataFrame(rng.integers(0, 5, (300, 8)), columns=features), rng.random(300)
)
def predict(live_features):
    scores = model.predict(live_features[features])
    return pd.DataFrame({"prediction": scores}, index=live_features.index).rank(pct=True)
""",
    "numerai_tools_rank": """
from numerai_tools.scoring import tie_kept_rank
def predict(live_features):
    scores = live_features[["feature_0003"]].astype(float).sort_index()  # it wants ids sorted
    return tie_kept_rank(scores).set_axis(["prediction"], axis=1)
""",
    "helper_and_neutralization": """
import numpy as np
def neutralize(scores, exposures, proportion):
    exposures = np.hstack([exposures, np.ones((len(exposures), 1))])
    return scores - proportion * exposures @ np.linalg.lstsq(exposures, scores, rcond=None)[0]
def make(proportion):
    def predict(live_features):
        exposures = live_features[["feature_0004", "feature_0005"]].to_numpy(float)
        scores = neutralize(live_features["feature_0006"].to_numpy(float), exposures, proportion)
        frame = live_features[["feature_0006"]].set_axis(["prediction"], axis=1).astype(float)
        frame["prediction"] = scores
        return frame.rank(pct=True)
    return predict
predict = make(0.5)
""",
}
# Styles the runner refuses: its output checks (predict.py lines 232-251), its
# parameter count (217-230) or the function's own exception (257-259).
REFUSED = {
    "returns_none": "def predict(live_features):\n    return None\n",
    "returns_a_series": f"def predict(live_features):\n    return {_FIRST}.rank(pct=True)['feature_0000']\n",
    "returns_nan": f"def predict(live_features):\n    return {_FIRST}.where({_FIRST} > 1)\n",
    "returns_out_of_range": f"def predict(live_features):\n    return {_FIRST} * 2 + 1\n",
    "returns_empty": f"def predict(live_features):\n    return {_FIRST}.iloc[:0]\n",
    "three_parameters": "def predict(live_features, benchmarks, extra):\n    return None\n",
    "raises": "def predict(live_features):\n    return live_features['no_such_column']\n",
}
# Styles the runner accepts and the product refuses: Numerai's upload rules refuse the CSV.
ON_PURPOSE = {
    "column_not_named_prediction": (
        f"def predict(live_features):\n    return {_FIRST}.rank(pct=True)\n",
        "the CSV needs a 'prediction' (or 'probability') column",
    ),
    "index_not_named_id": (
        f"def predict(live_features):\n"
        f"    return {_FIRST}.rank(pct=True).set_axis(['prediction'], axis=1).reset_index(drop=True)\n",
        "the CSV needs an 'id' column of live ids",
    ),
    "half_the_ids": (
        f"def predict(live_features):\n"
        f"    return {_FIRST}.rank(pct=True).set_axis(['prediction'], axis=1).iloc[::2]\n",
        "every live id must be predicted",
    ),
    "ids_twice": (
        "import pandas as pd\ndef predict(live_features):\n"
        f"    once = {_FIRST}.rank(pct=True).set_axis(['prediction'], axis=1)\n"
        "    return pd.concat([once, once])\n",
        "each id at most once",
    ),
    "constant": (
        f"def predict(live_features):\n    return {_FIRST}.set_axis(['prediction'], axis=1) * 0 + 0.5\n",
        "predictions must not all be equal",
    ),
    "extra_column": (
        f"def predict(live_features):\n"
        f"    ranked = {_FIRST}.rank(pct=True).set_axis(['prediction'], axis=1)\n"
        "    return ranked.assign(confidence=0.5)\n",
        "exactly the 'id' and 'prediction' columns",
    ),
}
# Built by another Python: no imports when built, so any Python here can build them.
FOREIGN = {"ranks_inside": ACCEPTED["one_parameter"], "returns_nan": REFUSED["returns_nan"]}


@dataclass
class RunnerResult:
    accepted: bool
    csv: str | None  # what it would upload
    log: str


class _Exited(Exception):
    """predict.py's exit_with_help (line 69): the run ends with an error."""


def runner_predict(model_pkl: Path, live: Path, benchmarks: Path) -> RunnerResult:
    """numerai-predict's main() (predict.py lines 173-279), the network replaced by files."""
    log: list[str] = []
    try:
        # 194-211: pd.read_pickle; UnpicklingError, TypeError, ModuleNotFoundError end the run.
        try:
            model = pd.read_pickle(model_pkl)
        except (__import__("pickle").UnpicklingError, TypeError, ModuleNotFoundError) as exc:
            raise _Exited(f"cannot load: {exc}") from None
        # 214: every parameter counts, defaulted ones too (not caught: a crash ends the run).
        num_args = len(inspect.signature(model).parameters)
        # 216-218, get_data (136-150): pd.read_parquet of the local files.
        live_features = pd.read_parquet(live)
        if num_args > 1:
            benchmark_models = pd.read_parquet(benchmarks)
        try:
            # 221-230: one or two arguments, anything else ends the run.
            if num_args == 1:
                predictions = model(live_features)
            elif num_args == 2:
                predictions = model(live_features, benchmark_models)
            else:
                raise _Exited(f"{num_args} arguments")
            # 232-251: the output checks, in this order.
            if predictions is None:
                raise _Exited("returned None")
            if type(predictions) is not pd.DataFrame:
                raise _Exited(f"returned {type(predictions)}")
            if len(predictions) == 0:
                raise _Exited("returned 0 predictions")
            if predictions.isna().any().any():
                raise _Exited("returned NaN")
            if not predictions.iloc[:, 0].between(0, 1).all().all():
                raise _Exited("values outside [0, 1]")
        except _Exited:
            raise
        except Exception as exc:  # 252-259: the function's own errors end the run
            raise _Exited(f"{type(exc).__name__}: {exc}") from None
    except _Exited as exc:
        log.append(str(exc))
        return RunnerResult(False, None, "; ".join(log))
    # 160 (upload_live_output): the posted file is predictions.to_csv().
    return RunnerResult(True, predictions.to_csv(), "")


def run_runner_in_fork(model_pkl: Path, round_: SyntheticRound, out: Path) -> RunnerResult:
    """`runner_predict` in a forked process, whose crash (a signal) ends the run as it does Numerai's."""

    def child() -> None:
        faulthandler.disable()  # a crash is an expected outcome here, not a traceback to print
        result = runner_predict(model_pkl, round_.live_path, round_.benchmark_path)
        out.write_text(json.dumps(result.__dict__))

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(120)
    if process.exitcode != 0 or not out.exists():
        return RunnerResult(False, None, f"the runner's process ended with {process.exitcode}")
    return RunnerResult(**json.loads(out.read_text()))


def spec(name: str) -> ModelSpec:
    return ModelSpec(name=name, file=f"{name}.pkl", format="numerai_pickle", trust_pickle=True)


@pytest.fixture(scope="module")
def both_ways(small_round: SyntheticRound, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every style built here (and FOREIGN by every other Python found), run both ways."""
    folder = tmp_path_factory.mktemp("parity")
    sources = {**ACCEPTED, **REFUSED, **{n: s for n, (s, _) in ON_PURPOSE.items()}}
    built = pickle_many(find_python(RUNNING), sources, folder / RUNNING)
    for version in ("3.10", "3.11", "3.12", "3.13"):
        if version == RUNNING:
            continue
        try:
            python = find_python(version)
        except RuntimeError:
            continue  # checked by test_pickle_python's skips; here only what can be built
        foreign = pickle_many(python, FOREIGN, folder / version)
        built.update(
            {f"{name}_on_{version.replace('.', '_')}": path for name, path in foreign.items()}
        )
    product = predict(small_round, [(spec(n), p) for n, p in built.items()], folder / "product")
    runner = {n: run_runner_in_fork(p, small_round, folder / f"{n}.json") for n, p in built.items()}
    return {"product": product, "runner": runner, "names": list(built)}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_what_the_runner_accepts_is_submitted_here_byte_for_byte(both_ways, name: str) -> None:
    runner, product = both_ways["runner"][name], both_ways["product"][name]
    assert runner.accepted, runner.log
    assert product.ok, product.error
    assert product.csv == runner.csv


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_the_runner_refuses_is_refused_here(both_ways, name: str) -> None:
    runner, product = both_ways["runner"][name], both_ways["product"][name]
    assert not runner.accepted
    assert not product.ok and product.error.startswith(f"model '{name}': "), product.error


@pytest.mark.parametrize("name", sorted(ON_PURPOSE))
def test_what_numerais_upload_rules_refuse_is_refused_here_on_purpose(both_ways, name: str) -> None:
    runner, product = both_ways["runner"][name], both_ways["product"][name]
    assert runner.accepted, runner.log  # the runner posts it; Numerai's upload rules refuse it
    assert not product.ok, ON_PURPOSE[name][1]
    assert product.csv == runner.csv  # kept for inspection, the same bytes


def test_pickles_of_other_pythons_are_refused_both_ways_and_named_here(both_ways) -> None:
    foreign = [n for n in both_ways["names"] if "_on_3_" in n]
    if not foreign:
        pytest.skip("no other Python found to build pickles with")
    for name in foreign:
        version = name.rsplit("_on_", 1)[1].replace("_", ".")
        runner, product = both_ways["runner"][name], both_ways["product"][name]
        assert not runner.accepted, name
        assert product.error.startswith(
            f"model '{name}': '{name}.pkl' was built on Python {version}; this deployment runs "
            f"{RUNNING}: "
        ), product.error
