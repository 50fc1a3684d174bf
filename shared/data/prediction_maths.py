"""What happens to predictions after the models predict: ensembles, neutralization and the benchmark check.

Neutralization is numerai-tools'; ranks and rank correlations are pandas' own
(numerai-tools' scoring module imports scipy and scikit-learn, over a second and
a hundred MB, which the run's process loads only when a manifest neutralizes).
This module aligns the ids, fills missing features as the worker does, and
words the failures for the participant.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd

from shared.errors import PostprocessError

# Numerai's features are binned 0..4; a missing value counts as the middle bin,
# as the worker fills it before predicting.
MIDDLE_BIN = 2.0


def rank_average(
    entry: str, predictions: dict[str, pd.Series], weights: dict[str, float]
) -> pd.Series:
    """The weighted mean of the members' percentile ranks, ranked again into (0, 1], as Numerai's example ensembles do.

    `predictions` maps each member to its predictions indexed by id; every
    member must predict the same ids. The result is in the first member's id order.
    """
    absent = [member for member in weights if member not in predictions]
    if absent:
        raise PostprocessError(
            f"ensemble '{entry}': member '{absent[0]}' has no predictions to combine"
        )
    first = next(iter(weights))
    ids = predictions[first].index
    for member in weights:
        _check_same_ids(entry, first, ids, member, predictions[member].index)
    total = sum(weights.values())
    blended = sum(
        (weight / total) * _percentile(predictions[member].sort_index())
        for member, weight in weights.items()
    )
    return _percentile(blended).reindex(ids)


def neutralize(
    entry: str, predictions: pd.Series, features: pd.DataFrame, proportion: float
) -> pd.Series:
    """`predictions` with `proportion` of their linear exposure to the `features` columns removed, ranked into (0, 1].

    `features` is indexed by id and may hold more ids than `predictions`.
    """
    missing = predictions.index.difference(features.index)
    if len(missing):
        raise PostprocessError(
            f"model '{entry}': cannot neutralize: {len(missing)} of {len(predictions)} predicted ids have no "
            f"row in the live features (first: {missing[0]})"
        )
    if predictions.isna().any() or predictions.nunique() < 2:
        raise PostprocessError(
            f"model '{entry}': cannot neutralize predictions that are missing or all equal"
        )
    from numerai_tools.scoring import neutralize as neutralize_frame  # see the module docstring

    neutralizers = features.loc[predictions.index].fillna(MIDDLE_BIN).astype(np.float64)
    neutral = neutralize_frame(predictions.astype(np.float64).to_frame(), neutralizers, proportion)
    return _percentile(neutral.iloc[:, 0]).rename(predictions.name)


def benchmark_corr(predictions: pd.Series, benchmark: pd.Series) -> float:
    """The rank (Spearman) correlation of `predictions` with `benchmark` on the ids both have values for; NaN when there are none."""
    ids = predictions.dropna().index.intersection(benchmark.dropna().index).sort_values()
    if predictions.loc[ids].nunique() < 2 or benchmark.loc[ids].nunique() < 2:
        return math.nan  # undefined; checked here, as scipy warns into the log otherwise
    # Spearman's rho: the Pearson correlation of the ranks (ties averaged).
    return float(predictions.loc[ids].rank().corr(benchmark.loc[ids].rank()))


def recent_median(values: list[float]) -> float | None:
    """The median of the finite values, or None when there is none."""
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else None


def gate_reason(
    entry: str, corr: float, recent: list[float], min_corr: float | None, max_drop: float | None
) -> str | None:
    """Why predictions with benchmark correlation `corr` must not be uploaded, or None when they may.

    `recent` holds the entry's correlations of its last rounds; without any, the drop cannot be judged.
    """
    if min_corr is None and max_drop is None:
        return None
    if not math.isfinite(corr):
        return (
            f"model '{entry}': correlation with the benchmark cannot be computed (no ids in common, or "
            "predictions that are all equal), so the manifest's benchmark check cannot pass"
        )
    if min_corr is not None and corr < min_corr:
        return (
            f"model '{entry}': correlation with the benchmark is {corr:.2f}, below min_benchmark_corr "
            f"{min_corr:.2f} in the manifest: were the model's features changed?"
        )
    median = recent_median(recent)
    if max_drop is not None and median is not None and _exceeds(median - corr, max_drop):
        rounds = sum(math.isfinite(v) for v in recent)
        last = f"median of the last {rounds} rounds" if rounds > 1 else "the last round"
        return (
            f"model '{entry}': correlation with the benchmark fell from {median:.2f} ({last}) to {corr:.2f}, more than max_benchmark_corr_drop {max_drop:.2f}: "
            "were the model's features changed?"
        )
    return None


def _exceeds(drop: float, max_drop: float) -> bool:
    # 0.52 - 0.22 is 0.30000000000000004: a drop that equals the maximum as shown passes.
    return drop > max_drop and not math.isclose(drop, max_drop, abs_tol=1e-9)


def _check_same_ids(entry: str, first: str, ids: pd.Index, member: str, other: pd.Index) -> None:
    if other.has_duplicates:
        raise PostprocessError(
            f"ensemble '{entry}': member '{member}' predicted {int(other.duplicated().sum())} ids more than once"
        )
    missing = ids.difference(other)
    extra = other.difference(ids)
    if len(missing) or len(extra) or len(other) != len(ids):
        raise PostprocessError(
            f"ensemble '{entry}': member '{member}' predicted different ids from member '{first}' "
            f"({len(missing)} of {len(ids)} missing, {len(extra)} others, {len(other)} rows)"
        )


def _percentile(values: pd.Series) -> pd.Series:
    # pandas' percentile rank, not numerai-tools' centred one: (0, 1], as a single
    # model's ranked submission is (shared/data/submission_rules.py).
    return values.rank(pct=True, method="average")
