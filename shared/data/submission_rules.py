"""Turning a model's outputs into a Numerai submission, and checking it before upload.

The rules are Numerai's published ones, written here rather than imported: the
workers run numerai-tools at the version of Numerai's hosted runner (0.4.3, so
that a pickle calls the functions it was built against), and 0.4.3 has no
`validate_submission_numerai`. Each rule cites its source:
- [tools]: numerai-tools 0.5.0, `numerai_tools/submissions.py`,
  `validate_submission_numerai` (`_validate_headers`, `_validate_ids`, `validate_values`);
- [docs]: docs.numer.ai/numerai-tournament/submissions: "Predictions must be
  between 0 and 1"; its example writes `pd.Series(live_predictions,
  index=live_features.index).to_frame("prediction").to_csv()`: the columns
  `id` and `prediction`, one row per live id.

Two rules go further than numerai-tools, which cannot see them: the raw outputs
must be finite before ranking (ranking hides infinities), and every live id must
be predicted exactly once (numerai-tools drops ids that are not live).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.data.live_data import ID_COLUMN
from shared.errors import SubmissionInvalid
from shared.manifest import ModelSpec, OutputTransform

# [tools] NUMERAI_ALLOWED_ID_COLS and NUMERAI_ALLOWED_PRED_COLS, in this order.
PREDICTION_COLUMNS = ("prediction", "probability")
# What pandas names the column that DataFrame.to_csv() writes for an unnamed index.
UNNAMED_INDEX = "Unnamed: 0"


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
    prediction = _check_headers(spec, submission)
    _check_numeric(spec, submission[prediction])
    _check_finite(spec, submission)
    _check_ids_present(spec, submission)
    _check_exactly_once(spec, submission, live_ids)
    _check_range(spec, submission[prediction])
    _check_spread(spec, submission[prediction])


def _check_headers(spec: ModelSpec, submission: pd.DataFrame) -> str:
    """[tools] `_validate_headers`: exactly `id`, then `prediction` or `probability`. [docs] the same."""
    columns = [str(column) for column in submission.columns]
    if len(columns) == 2 and columns[0] == ID_COLUMN and columns[1] in PREDICTION_COLUMNS:
        return columns[1]
    hint = ""
    if ID_COLUMN not in columns and (not columns or columns[0] in (UNNAMED_INDEX, "")):
        hint = (
            ": the ids are missing, as when the index is not named; the index must be the live "
            "ids, named 'id' (index=live.index, or .rename_axis('id'))"
        )
    found = ", ".join(f"'{column}'" for column in columns) or "none"
    raise SubmissionInvalid(
        f"model '{spec.name}': its predictions have the columns {found}; Numerai takes exactly "
        f"two: 'id', then 'prediction' (or 'probability'){hint}"
    )


def _check_numeric(spec: ModelSpec, values: pd.Series) -> None:
    """[tools] `validate_values` compares values with 0 and 1, which only numbers pass."""
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise SubmissionInvalid(
            f"model '{spec.name}': column '{values.name}' holds {values.dtype} values, not numbers; "
            "each prediction must be a number in [0, 1]"
        )


def _check_finite(spec: ModelSpec, submission: pd.DataFrame) -> None:
    """[tools] `validate_values`: "submission must not contain NaNs"; infinity too, which ranking hides."""
    values = submission.iloc[:, 1].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise SubmissionInvalid(
            f"model '{spec.name}': predicted NaN or infinity for {int(bad.sum())} of {len(bad)} rows"
        )


def _check_ids_present(spec: ModelSpec, submission: pd.DataFrame) -> None:
    """[tools] `_validate_ids`: "Submission must not contain NaNs in the id column"."""
    missing = int(submission[ID_COLUMN].isna().sum())
    if missing:
        raise SubmissionInvalid(
            f"model '{spec.name}': {missing} of {len(submission)} rows have no id; every row needs "
            "the live id it predicts, in column 'id'"
        )


def _check_exactly_once(spec: ModelSpec, submission: pd.DataFrame, live_ids: pd.Index) -> None:
    """[tools] `_validate_ids`: no duplicate ids, at least as many live ids as the round has.

    Stricter than numerai-tools, which drops ids that are not live: a submission
    here is exactly this round's ids, each once.
    """
    ids = pd.Index(submission[ID_COLUMN].astype(str))
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        raise SubmissionInvalid(
            f"model '{spec.name}': {len(duplicated)} ids are predicted more than once "
            f"(first: {duplicated[0]}); predict each live id once"
        )
    live = pd.Index(live_ids.astype(str))
    missing = live.difference(ids)
    extra = ids.difference(live)
    if len(missing) or len(extra):
        raise SubmissionInvalid(
            f"model '{spec.name}': predictions cover {len(ids) - len(extra)} of {len(live)} live ids "
            f"({len(missing)} missing, {len(extra)} not in this round); predict every row of this "
            "round's live.parquet, and only those"
        )


def _check_range(spec: ModelSpec, values: pd.Series) -> None:
    """[tools] `validate_values`: values within [0, 1]; a minimum np.isclose to 0, a maximum to 1, pass too.

    [docs] predictions are values in [0, 1]. numerai-tools' message says "exclusive", but
    its test (`Series.between`) includes 0 and 1.
    """
    low, high = float(values.min()), float(values.max())
    if (low >= 0 or np.isclose(low, 0)) and (high <= 1 or np.isclose(high, 1)):
        return
    outside = int((~values.between(0, 1)).sum())
    raise SubmissionInvalid(
        f"model '{spec.name}': {outside} of {len(values)} predictions lie outside [0, 1] "
        f"(from {low:.6g} to {high:.6g}); Numerai takes values in [0, 1]: rank them "
        '("output": "rank" in the manifest entry) or scale them into [0, 1]'
    )


def _check_spread(spec: ModelSpec, values: pd.Series) -> None:
    """[tools] `validate_values`: "submission must have non-zero standard deviation" (np.isclose to 0)."""
    spread = float(values.std())
    if np.isclose(0, spread):
        raise SubmissionInvalid(
            f"model '{spec.name}': all {len(values)} predictions are (nearly) equal (standard "
            f"deviation {spread:.3g}), which Numerai refuses; a constant output usually means the "
            "model did not get the features it was trained on"
        )
