"""Reading live.parquet in batches: boundaries, projection, missing values, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from devkit.synthetic import SyntheticRound, write_round
from shared.data.live_data import LiveData, read_feature_sets, resolve_features
from shared.errors import DataError
from shared.manifest import ModelSpec


def spec(features: str | list[str]) -> ModelSpec:
    return ModelSpec(name="m", file="m.onnx", format="onnx", features=features)


@pytest.mark.parametrize("batch_rows", [1, 7, 100, 503, 10_000])
def test_batches_cover_every_row_once_in_file_order(
    small_round: SyntheticRound, batch_rows: int
) -> None:
    live = LiveData(small_round.live_path, "v5.3")
    columns = small_round.feature_sets["small"]
    batches = list(live.batches(columns, batch_rows))
    assert [len(b.ids) for b in batches[:-1]] == [batch_rows] * (len(batches) - 1)
    ids = [i for b in batches for i in b.ids.to_pylist()]
    assert ids == small_round.ids
    values = np.vstack([b.values for b in batches])
    expected = pd.read_parquet(small_round.live_path)[columns].to_numpy(np.float32)
    np.testing.assert_array_equal(values, expected)
    assert all(b.values.dtype == np.float32 and b.values.flags.c_contiguous for b in batches)


def test_a_single_row_round(tmp_path: Path) -> None:
    one = write_round(tmp_path, rows=1, n_features=10)
    batches = list(LiveData(one.live_path, "v5.3").batches(one.feature_sets["all"], 1000))
    assert len(batches) == 1 and batches[0].values.shape == (1, 10)


def test_only_the_requested_columns_are_read_in_the_requested_order(
    small_round: SyntheticRound,
) -> None:
    columns = ["feature_0042", "feature_0003"]
    batch = next(LiveData(small_round.live_path, "v5.3").batches(columns, 50))
    assert batch.values.shape == (50, 2)
    frame = pd.read_parquet(small_round.live_path).iloc[:50]
    np.testing.assert_array_equal(batch.values, frame[columns].to_numpy(np.float32))


def test_missing_values_arrive_as_nan(tmp_path: Path) -> None:
    holes = write_round(tmp_path, rows=300, n_features=12, missing_fraction=0.1, seed=3)
    batches = list(LiveData(holes.live_path, "v5.3").batches(holes.feature_sets["all"], 64))
    values = np.vstack([b.values for b in batches])
    expected = pq.read_table(holes.live_path, columns=holes.feature_sets["all"]).to_pandas()
    assert np.isnan(values).sum() == expected.isna().to_numpy().sum() > 0
    assert any(b.has_missing for b in batches)


def test_a_missing_feature_lists_the_first_names_the_count_and_the_version(
    small_round: SyntheticRound,
) -> None:
    live = LiveData(small_round.live_path, "v5.2")
    wanted = [f"feature_new_{i}" for i in range(8)] + ["feature_0001"]
    with pytest.raises(DataError) as error:
        live.check_features(spec(wanted), wanted)
    message = str(error.value)
    assert "model 'm': 8 of its 9 features are not in live.parquet of data version v5.2" in message
    assert (
        "feature_new_0, feature_new_1, feature_new_2, feature_new_3, feature_new_4 and 3 more"
        in message
    )


def test_feature_sets_resolve_and_unknown_sets_are_named(small_round: SyntheticRound) -> None:
    sets = read_feature_sets(small_round.features_path)
    assert resolve_features(spec("medium"), sets) == sets["medium"]
    assert resolve_features(spec(["feature_0001"]), sets) == ["feature_0001"]
    with pytest.raises(
        DataError, match="feature set 'huge' is not in features.json; it has: all, medium, small"
    ):
        resolve_features(spec("huge"), sets)


def test_files_that_are_not_what_they_claim(tmp_path: Path) -> None:
    not_parquet = tmp_path / "live.parquet"
    not_parquet.write_text("id,feature\n")
    with pytest.raises(DataError, match="live.parquet \\(v5.3\\): not a readable parquet file"):
        LiveData(not_parquet, "v5.3")
    no_id = tmp_path / "noid.parquet"
    pq.write_table(pa.table({"feature_a": pa.array([1, 2], pa.int8())}), no_id)
    with pytest.raises(DataError, match="has no 'id' column"):
        LiveData(no_id, "v5.3")
    text_feature = tmp_path / "text.parquet"
    pq.write_table(pa.table({"id": ["a"], "feature_a": ["high"]}), text_feature)
    with pytest.raises(DataError, match="column 'feature_a' holds string, not numbers"):
        list(LiveData(text_feature, "v5.3").batches(["feature_a"], 10))
    bad_json = tmp_path / "features.json"
    bad_json.write_text('{"targets": []}')
    with pytest.raises(DataError, match="features.json: not a Numerai features.json"):
        read_feature_sets(bad_json)


def _with_values(
    source: SyntheticRound, directory: Path, values: dict[str, tuple[slice, float]]
) -> Path:
    """A copy of a round's live.parquet with some rows of some columns overwritten."""
    frame = pd.read_parquet(source.live_path)
    for column, (rows, value) in values.items():
        frame[column] = frame[column].astype("float64")
        frame.iloc[rows, frame.columns.get_loc(column)] = value
    directory.mkdir()
    frame.to_parquet(directory / "live.parquet")
    return directory / "live.parquet"


def test_values_outside_the_bins_name_every_column_even_in_later_batches(
    small_round: SyntheticRound, tmp_path: Path
) -> None:
    columns = small_round.feature_sets["all"]
    path = _with_values(
        small_round,
        tmp_path / "bad",
        {
            "feature_0003": (slice(None), 127.0),
            "feature_0007": (slice(400, 401), -1.0),
            "feature_0009": (slice(0, 50), np.nan),  # missing is not out of range
        },
    )
    live = LiveData(path, "v5.3")
    yielded = []
    with pytest.raises(DataError) as error:
        yielded.extend(live.checked_batches(spec(columns), columns, 100))
    assert str(error.value) == (
        "model 'm': 2 of its 60 features have values outside 0–4 in live.parquet of data version v5.3: "
        "feature_0003 (127), feature_0007 (-1)"
    )
    assert yielded == []  # nothing after the first bad batch reaches a model


def test_values_outside_the_bins_list_the_first_columns_and_a_count(
    small_round: SyntheticRound, tmp_path: Path
) -> None:
    columns = small_round.feature_sets["all"]
    path = _with_values(
        small_round, tmp_path / "bad", {f"feature_00{i}": (slice(None), 5.0) for i in range(10, 17)}
    )
    with pytest.raises(DataError) as error:
        list(LiveData(path, "v5.2").checked_batches(spec(columns), columns, 1000))
    assert str(error.value).endswith(
        "7 of its 60 features have values outside 0–4 in live.parquet of data version v5.2: feature_0010 (5), "
        "feature_0011 (5), feature_0012 (5), feature_0013 (5), feature_0014 (5) and 2 more"
    )


def test_columns_a_model_does_not_take_are_not_checked(
    small_round: SyntheticRound, tmp_path: Path
) -> None:
    path = _with_values(small_round, tmp_path / "bad", {"feature_0003": (slice(None), 127.0)})
    columns = ["feature_0001", "feature_0002"]
    batches = list(LiveData(path, "v5.3").checked_batches(spec(columns), columns, 100))
    assert sum(len(b.ids) for b in batches) == len(small_round.ids)


def test_every_feature_column_and_only_those_are_the_files_features(
    small_round: SyntheticRound,
) -> None:
    live = LiveData(small_round.live_path, "v5.3")
    assert live.feature_columns == small_round.feature_sets["all"]  # not id, era or data_type
