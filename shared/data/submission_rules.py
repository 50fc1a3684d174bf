"""Turning a model's outputs into a Numerai submission, and checking it before upload.

The rules are Numerai's own, from numerai-tools' `validate_submission_numerai`;
this module adds only what those rules cannot see: that the raw outputs were
finite before ranking (ranking hides infinities) and that every live id is
predicted exactly once (numerai-tools drops ids that are not live).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numerai_tools.submissions import validate_submission_numerai

from shared.errors import AppError, SubmissionInvalid
from shared.manifest import ModelSpec, OutputTransform


def build_submission(
    spec: ModelSpec, ids: pd.Index, outputs: np.ndarray | pd.Series
) -> pd.DataFrame:
    """A DataFrame with columns `id` and `prediction`, in the order of `ids`.

    Outputs with NaN or infinity are kept as they are, unranked (ranking would
    hide infinities), for `validate_submission` to refuse and the archive to keep.
    """
    values = np.asarray(outputs, dtype=np.float64)
    if spec.output is OutputTransform.RANK and np.isfinite(values).all():
        # Live data is a single era, so one ranking over all rows is the per-era
        # rank that Numerai's example models apply.
        values = pd.Series(values).rank(pct=True, method="average").to_numpy()
    return pd.DataFrame({"id": np.asarray(ids, dtype=object), "prediction": values})


def validate_submission(spec: ModelSpec, submission: pd.DataFrame, live_ids: pd.Index) -> None:
    """Raise SubmissionInvalid unless `submission` is one Numerai would accept for this round."""
    if not __debug__:
        # numerai-tools states its rules as assert statements, which -O removes.
        raise AppError("submissions cannot be validated under python -O; run without -O")
    _check_finite(spec, submission)
    _check_exactly_once(spec, submission, live_ids)
    try:
        # numerai-tools converts ids with astype(str); with pyarrow-backed strings
        # (pandas 3's default) its isin() loops in Python and takes 5x as long.
        with pd.option_context("mode.string_storage", "python"):
            validate_submission_numerai(pd.Series(live_ids, dtype=object), submission)
    except AssertionError as exc:
        raise SubmissionInvalid(f"model '{spec.name}': {exc}") from None


def _check_finite(spec: ModelSpec, submission: pd.DataFrame) -> None:
    values = submission.drop(columns="id", errors="ignore")
    if values.empty or not pd.api.types.is_numeric_dtype(values.iloc[:, 0]):
        return  # numerai-tools names what is wrong with the columns
    bad = ~np.isfinite(values.iloc[:, 0].to_numpy(dtype=np.float64))
    if bad.any():
        raise SubmissionInvalid(
            f"model '{spec.name}': predicted NaN or infinity for {int(bad.sum())} of {len(bad)} rows"
        )


def _check_exactly_once(spec: ModelSpec, submission: pd.DataFrame, live_ids: pd.Index) -> None:
    if "id" not in submission.columns:
        return  # numerai-tools reports the headers
    ids = pd.Index(submission["id"].astype(str))
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        raise SubmissionInvalid(
            f"model '{spec.name}': {len(duplicated)} ids are predicted more than once "
            f"(first: {duplicated[0]})"
        )
    live = pd.Index(live_ids.astype(str))
    missing = live.difference(ids)
    extra = ids.difference(live)
    if len(missing) or len(extra):
        raise SubmissionInvalid(
            f"model '{spec.name}': predictions cover {len(ids) - len(extra)} of {len(live)} live ids "
            f"({len(missing)} missing, {len(extra)} not in this round)"
        )
