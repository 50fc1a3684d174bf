"""Post-processing: rank-averaged ensembles, neutralization and the benchmark check, on real numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from shared.data.prediction_maths import (
    benchmark_corr,
    gate_reason,
    neutralize,
    rank_average,
    recent_median,
)
from shared.errors import PostprocessError

IDS = pd.Index([f"n{i:04d}" for i in range(2000)], name="id")


def test_rank_average_matches_a_hand_computation() -> None:
    ids = pd.Index(["c", "a", "d", "b"], name="id")
    first = pd.Series([0.9, 0.1, 0.4, 0.4], index=ids)  # ranks c=1, a=.25, d=b=.625 (tie averaged)
    second = pd.Series([10.0, 40.0, 20.0, 30.0], index=ids)  # ranks c=.25, a=1, d=.5, b=.75
    # Weights 3 and 1: c = (3*1 + .25)/4 = .8125, a = (.75 + 1)/4 = .4375,
    # d = (1.875 + .5)/4 = .59375, b = (1.875 + .75)/4 = .65625; ranked again: a < d < b < c.
    blended = rank_average("ens", {"first": first, "second": second}, {"first": 3, "second": 1})
    assert list(blended.index) == ["c", "a", "d", "b"]
    assert blended.tolist() == [1.0, 0.25, 0.5, 0.75]


def test_rank_average_takes_weights_relative_and_ranks_into_the_unit_interval() -> None:
    rng = np.random.default_rng(0)
    members = {name: pd.Series(rng.normal(size=len(IDS)), index=IDS) for name in ("a", "b", "c")}
    blended = rank_average("ens", members, {"a": 1, "b": 2, "c": -0.5})
    assert blended.equals(rank_average("ens", members, {"a": 2, "b": 4, "c": -1}))
    assert blended.min() > 0 and blended.max() == 1.0
    shuffled = {name: s.sample(frac=1, random_state=1) for name, s in members.items()}
    assert (
        rank_average("ens", shuffled, {"a": 1, "b": 2, "c": -0.5})
        .sort_index()
        .equals(blended.sort_index())
    )


def test_rank_average_names_the_member_whose_ids_differ() -> None:
    base = pd.Series(np.linspace(0, 1, len(IDS)), index=IDS)
    short = base.iloc[:-3]
    with pytest.raises(PostprocessError) as error:
        rank_average("ens", {"a": base, "b": base, "c": short}, {"a": 1, "b": 1, "c": 1})
    assert str(error.value) == (
        "ensemble 'ens': member 'c' predicted different ids from member 'a' (3 of 2000 missing, 0 others, 1997 rows)"
    )
    renamed = base.rename(index=lambda i: i.replace("n0", "x0"))
    with pytest.raises(
        PostprocessError,
        match=r"member 'b' predicted different ids from member 'a' "
        r"\(1000 of 2000 missing, 1000 others, 2000 rows\)",
    ):
        rank_average("ens", {"a": base, "b": renamed}, {"a": 1, "b": 1})
    twice = pd.concat([base, base.iloc[:2]])
    with pytest.raises(
        PostprocessError, match="ensemble 'ens': member 'b' predicted 2 ids more than once"
    ):
        rank_average("ens", {"a": base, "b": twice}, {"a": 1, "b": 1})
    with pytest.raises(
        PostprocessError, match="ensemble 'ens': member 'b' has no predictions to combine"
    ):
        rank_average("ens", {"a": base}, {"a": 1, "b": 1})


def exposed() -> tuple[pd.Series, pd.DataFrame]:
    """Predictions that lean on two of three binned features, with some features missing."""
    rng = np.random.default_rng(42)
    features = pd.DataFrame(
        rng.integers(0, 5, size=(len(IDS), 3)).astype(float),
        index=IDS,
        columns=["feature_a", "feature_b", "feature_c"],
    )
    predictions = (
        features["feature_a"] - 0.5 * features["feature_b"] + rng.normal(scale=1.0, size=len(IDS))
    )
    features.iloc[::50, 0] = np.nan  # Numerai's live data has gaps; the middle bin stands in
    return predictions.rank(pct=True), features


def exposure(predictions: pd.Series, features: pd.DataFrame) -> float:
    return max(abs(benchmark_corr(predictions, features[c].fillna(2.0))) for c in features.columns)


def test_full_neutralization_removes_the_exposure_and_half_leaves_some() -> None:
    predictions, features = exposed()
    before = exposure(predictions, features)
    assert before > 0.5
    full = neutralize("m", predictions, features, 1.0)
    half = neutralize("m", predictions, features, 0.5)
    # Neutralization is linear; ranking its result afterwards leaves a trace of exposure.
    assert exposure(full, features) < 0.05
    assert 0.3 < exposure(half, features) < before - 0.1
    for result in (full, half):
        assert result.index.equals(predictions.index)
        assert result.min() > 0 and result.max() == 1.0
    assert 0.3 < benchmark_corr(full, predictions) < 0.9  # what the features did not explain stays


def test_neutralize_uses_only_the_predicted_ids_and_the_given_columns() -> None:
    predictions, features = exposed()
    extra = pd.DataFrame(
        {c: [1.0] for c in features.columns}, index=pd.Index(["elsewhere"], name="id")
    )
    wider = pd.concat([features, extra])
    wider["feature_z"] = 0.0
    reversed_ids = predictions.iloc[::-1]
    result = neutralize("m", reversed_ids, wider[features.columns], 1.0)
    assert result.index.equals(reversed_ids.index)
    pd.testing.assert_series_equal(
        result.sort_index(), neutralize("m", predictions, features, 1.0).sort_index()
    )


def test_neutralize_names_the_entry_and_how_many_ids_lack_features() -> None:
    predictions, features = exposed()
    with pytest.raises(PostprocessError) as error:
        neutralize("my_model", predictions, features.iloc[5:], 0.5)
    assert str(error.value) == (
        "model 'my_model': cannot neutralize: 5 of 2000 predicted ids have no row in the live features (first: n0000)"
    )
    with pytest.raises(
        PostprocessError, match="model 'my_model': cannot neutralize predictions that are missing"
    ):
        neutralize("my_model", pd.Series(0.5, index=IDS), features, 0.5)


def test_benchmark_corr_of_itself_and_of_a_shuffled_copy() -> None:
    rng = np.random.default_rng(7)
    predictions = pd.Series(rng.random(len(IDS)), index=IDS)
    assert benchmark_corr(predictions, predictions) == pytest.approx(1.0)
    assert benchmark_corr(predictions, predictions.rank(pct=True) ** 3) == pytest.approx(
        1.0
    )  # ranks only
    shuffled = pd.Series(rng.permutation(predictions.to_numpy()), index=IDS)
    assert abs(benchmark_corr(predictions, shuffled)) < 0.06


def test_benchmark_corr_uses_the_common_ids_and_is_nan_safe() -> None:
    predictions = pd.Series(np.arange(len(IDS), dtype=float), index=IDS)
    benchmark = predictions.iloc[::-1].iloc[:1500].copy()
    benchmark.iloc[:10] = np.nan
    benchmark["not_live"] = 5.0
    assert benchmark_corr(predictions, benchmark) == pytest.approx(1.0)
    assert math.isnan(benchmark_corr(predictions, pd.Series(dtype=float)))
    assert math.isnan(benchmark_corr(predictions, pd.Series(np.nan, index=IDS)))
    assert math.isnan(benchmark_corr(pd.Series(0.5, index=IDS), predictions))


def test_recent_median_ignores_what_is_not_a_number() -> None:
    assert recent_median([0.5, 0.1, math.nan, 0.3]) == 0.3
    assert recent_median([0.4, 0.6]) == 0.5
    assert recent_median([]) is None
    assert recent_median([math.nan]) is None


def test_gate_reason_passes_what_the_manifest_allows() -> None:
    assert gate_reason("x", 0.01, [0.5], None, None) is None
    assert gate_reason("x", 0.25, [0.5, 0.52], 0.2, 0.3) is None
    assert gate_reason("x", 0.22, [0.52], None, 0.3) is None  # a drop of exactly the maximum passes
    assert gate_reason("x", 0.01, [], None, 0.2) is None  # no history: the drop cannot be judged
    assert gate_reason("x", 0.01, [math.nan], None, 0.2) is None


def test_gate_reason_says_why_in_words() -> None:
    assert gate_reason("x", 0.01, [0.5, 0.52], 0.2, None) == (
        "model 'x': correlation with the benchmark is 0.01, below min_benchmark_corr 0.20 in the manifest: "
        "were the model's features changed?"
    )
    assert gate_reason("x", 0.01, [0.50, 0.52, 0.52, 0.60], None, 0.2) == (
        "model 'x': correlation with the benchmark fell from 0.52 (median of the last 4 rounds) to 0.01, "
        "more than max_benchmark_corr_drop 0.20: were the model's features changed?"
    )
    assert gate_reason("x", 0.01, [0.52], 0.0, 0.2) == (
        "model 'x': correlation with the benchmark fell from 0.52 (the last round) to 0.01, "
        "more than max_benchmark_corr_drop 0.20: were the model's features changed?"
    )
    assert gate_reason("x", math.nan, [], 0.2, None) == (
        "model 'x': correlation with the benchmark cannot be computed (no ids in common, or predictions "
        "that are all equal), so the manifest's benchmark check cannot pass"
    )
