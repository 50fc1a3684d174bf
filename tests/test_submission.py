"""Building and validating a submission: Numerai's rules plus exactly-once coverage."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from shared.data.submission_rules import build_submission, validate_submission
from shared.errors import SubmissionInvalid
from shared.manifest import ModelSpec

IDS = pd.Index([f"n{i:015x}" for i in range(1, 201)], name="id")


def spec(output: str = "rank") -> ModelSpec:
    return ModelSpec(name="m", file="m.onnx", format="onnx", features="small", output=output)


def test_rank_maps_outputs_into_0_1_and_keeps_the_id_order() -> None:
    outputs = np.linspace(-50, 50, len(IDS))[::-1]
    submission = build_submission(spec(), IDS, outputs)
    assert submission["id"].tolist() == IDS.tolist()
    assert submission["prediction"].iloc[0] == 1.0
    assert submission["prediction"].min() == pytest.approx(1 / len(IDS))
    validate_submission(spec(), submission, IDS)


def test_raw_outputs_are_kept_and_must_lie_in_0_1() -> None:
    outputs = np.linspace(0.1, 1.3, len(IDS))
    submission = build_submission(spec("raw"), IDS, outputs)
    np.testing.assert_allclose(submission["prediction"], outputs)
    with pytest.raises(
        SubmissionInvalid,
        match="model 'm': 50 of 200 predictions lie outside \\[0, 1\\]",
    ):
        validate_submission(spec("raw"), submission, IDS)


def test_infinity_is_caught_before_ranking_would_hide_it() -> None:
    outputs = np.arange(len(IDS), dtype=float)
    outputs[3] = np.inf
    submission = build_submission(spec(), IDS, outputs)
    assert submission["prediction"].iloc[3] == np.inf  # kept unranked, for the archive
    with pytest.raises(SubmissionInvalid, match="predicted NaN or infinity for 1 of 200 rows"):
        validate_submission(spec(), submission, IDS)


def test_a_constant_submission_breaks_numerais_rules() -> None:
    submission = build_submission(spec(), IDS, np.ones(len(IDS)))
    with pytest.raises(SubmissionInvalid, match="all 200 predictions are \\(nearly\\) equal"):
        validate_submission(spec(), submission, IDS)


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (list(IDS[:-1]) + [IDS[0]], "1 ids are predicted more than once"),
        (list(IDS[:-5]), "cover 195 of 200 live ids \\(5 missing, 0 not in this round\\)"),
        (
            list(IDS) + ["n_from_last_week"],
            "cover 200 of 200 live ids \\(0 missing, 1 not in this round\\)",
        ),
    ],
)
def test_every_live_id_is_predicted_exactly_once(ids: list[str], message: str) -> None:
    submission = pd.DataFrame({"id": ids, "prediction": np.linspace(0.01, 0.99, len(ids))})
    with pytest.raises(SubmissionInvalid, match=message):
        validate_submission(spec(), submission, IDS)


# Every case numerai-tools 0.5.0's validate_submission_numerai refuses (numerai_tools/submissions.py:
# _validate_headers, _validate_ids, validate_values), refused here without numerai-tools, in words
# that name the model, what is wrong and what to do.
def frame(ids: object = IDS, **columns: object) -> pd.DataFrame:
    columns = columns or {"prediction": np.linspace(0.01, 0.99, len(IDS))}
    return pd.DataFrame({"id": list(ids), **columns})  # type: ignore[arg-type]


def refused(submission: pd.DataFrame) -> str:
    with pytest.raises(SubmissionInvalid) as caught:
        validate_submission(spec(), submission, IDS)
    message = str(caught.value)
    assert message.startswith("model 'm': ")
    return message


@pytest.mark.parametrize(
    ("columns", "named"),
    [
        (["id", "score"], "'id', 'score'"),
        (["prediction", "id"], "'prediction', 'id'"),
        (["id", "prediction", "extra"], "'id', 'prediction', 'extra'"),
        (["prediction"], "'prediction'"),
        (["ID", "prediction"], "'ID', 'prediction'"),
    ],
)
def test_the_columns_must_be_id_then_prediction_or_probability(
    columns: list[str], named: str
) -> None:
    values = {name: np.linspace(0.01, 0.99, len(IDS)) for name in columns if name != "id"}
    submission = frame(**values) if "id" in columns else pd.DataFrame(values)
    message = refused(submission[columns])
    assert f"its predictions have the columns {named}" in message
    assert "Numerai takes exactly two: 'id', then 'prediction' (or 'probability')" in message


def test_probability_is_accepted_as_the_prediction_column() -> None:
    validate_submission(spec(), frame(probability=np.linspace(0.01, 0.99, len(IDS))), IDS)


def test_an_unnamed_index_written_to_csv_is_named_as_the_cause() -> None:
    unnamed = pd.DataFrame(
        {"prediction": np.linspace(0.01, 0.99, len(IDS))}, index=IDS.rename(None)
    )
    submission = pd.read_csv(io.StringIO(unnamed.to_csv()))
    message = refused(submission)
    assert "'Unnamed: 0', 'prediction'" in message
    assert "the index must be the live ids, named 'id'" in message


def test_ids_must_not_be_missing() -> None:
    ids = list(IDS)
    ids[5] = ids[9] = None
    message = refused(frame(ids))
    assert "2 of 200 rows have no id" in message


def test_prediction_values_must_be_numbers() -> None:
    message = refused(frame(prediction=["high"] * len(IDS)))
    assert "column 'prediction' holds object values, not numbers" in message


def test_nan_predictions_are_refused_with_their_count() -> None:
    values = np.linspace(0.01, 0.99, len(IDS))
    values[[1, 2, 3]] = np.nan
    assert "predicted NaN or infinity for 3 of 200 rows" in refused(frame(prediction=values))


def test_values_outside_0_1_are_counted_and_ranking_is_suggested() -> None:
    values = np.linspace(-0.5, 1.5, len(IDS))
    message = refused(frame(prediction=values))
    assert "100 of 200 predictions lie outside [0, 1] (from -0.5 to 1.5)" in message
    assert '"output": "rank"' in message


@pytest.mark.parametrize("edge", [(-1e-9, 0.5), (0.5, 1 + 1e-6), (0.0, 1.0)])
def test_values_within_numerai_tools_tolerance_of_0_and_1_pass(edge: tuple[float, float]) -> None:
    # numerai-tools 0.5.0 also accepts a minimum np.isclose to 0 and a maximum np.isclose to 1.
    values = np.linspace(*edge, len(IDS))
    validate_submission(spec("raw"), frame(prediction=values), IDS)


def test_a_submission_whose_spread_is_zero_to_precision_is_refused() -> None:
    values = 0.5 + np.linspace(0, 1e-9, len(IDS))
    message = refused(frame(prediction=values))
    assert "standard deviation" in message and "all 200 predictions are (nearly) equal" in message
