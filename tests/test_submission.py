"""Building and validating a submission: Numerai's rules plus exactly-once coverage."""

from __future__ import annotations

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
        match="model 'm': invalid_submission_values: values must be between 0 and 1",
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
    with pytest.raises(SubmissionInvalid, match="non-zero standard deviation"):
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


def test_wrong_headers_are_numerai_tools_words() -> None:
    submission = pd.DataFrame({"id": IDS, "score": np.linspace(0.01, 0.99, len(IDS))})
    with pytest.raises(SubmissionInvalid, match="invalid_submission_headers"):
        validate_submission(spec(), submission, IDS)
