"""Numerai model uploads: a pickled `predict` function, called exactly as Numerai's hosted runner calls it.

The contract, rule by rule as Numerai's runner (`numerai/numerai-predict`,
`predict.py`) applies it; `tests/test_hosted_runner_contract.py` states each one:
1. the file is read with `pandas.read_pickle`;
2. `len(inspect.signature(predict).parameters)` (defaulted parameters count too)
   decides the call: one → `predict(live_features)`, two →
   `predict(live_features, live_benchmark_models)`, anything else is refused;
3. `live_features` is `pandas.read_parquet("live.parquet")` as it is: the `id`
   index, `era`, `data_type` and every feature, dtypes as stored, NaN in place;
4. `live_benchmark_models` is the whole `live_benchmark_models.parquet`, read
   only for two-parameter functions;
5. the result must be exactly a `pandas.DataFrame` (not a subclass, not a
   Series), not empty, with no NaN in any column, its first column within [0, 1];
6. it is written with `DataFrame.to_csv()`, index included, and that CSV is the
   submission: Numerai's upload rules then apply (checked by the engine).

Beyond the runner, and only when the manifest asks: `fill_missing` fills NaN
before the call, and `"output": "rank"` ranks the first column afterwards.
Beyond the runner, always: a result whose index is not the live ids named `id`,
which Numerai would refuse after upload, is refused with the fix.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from shared.data.live_data import ID_COLUMN
from shared.errors import DataError, ModelLoadError, PredictionError, RejectedPredictions
from shared.formats.base import (
    WholeRoundModel,
    first_line,
    missing_module,
    require_trust,
    unpickle,
)
from shared.formats.pickle_python import unknown_python_hint
from shared.manifest import ModelSpec, OutputTransform


class NumeraiPickleModel(WholeRoundModel):
    """An unpickled `predict` function and the number of parameters it declares."""

    def __init__(
        self,
        spec: ModelSpec,
        predict: Callable[..., Any],
        parameters: int,
        built_on: int | None = None,
    ) -> None:
        super().__init__(spec)
        self._predict = predict
        self._parameters = parameters
        self._built_on = built_on  # the Python its code says built it; None: not told

    def predict_round(self, live_path: Path, benchmark_path: Path | None) -> tuple[str, pd.Index]:
        live = read_parquet(live_path)
        if self.spec.fill_missing is not None:
            live = live.fillna(self.spec.fill_missing)
        arguments = [live]
        if self._parameters == 2:
            if benchmark_path is None:
                raise DataError("live_benchmark_models.parquet was not downloaded")
            arguments.append(read_parquet(benchmark_path))
        result = self._call(arguments)
        try:
            check_result(self.spec, result)
            check_index(self.spec, result)
        except PredictionError as exc:
            if type(result) is pd.DataFrame and len(result):
                raise RejectedPredictions(str(exc), result.to_csv()) from None
            raise
        if self.spec.output is OutputTransform.RANK:
            result = result.copy()
            result.iloc[:, 0] = result.iloc[:, 0].rank(pct=True, method="average")
        return result.to_csv(), live.index

    def _call(self, arguments: list[pd.DataFrame]) -> Any:
        """Call the function, naming the likely cause of the failures foreign bytecode gives.

        Bytecode of another Python can fail in the function, or in this frame that
        called it ("cannot access local variable"): this frame keeps nothing but
        the call, and whatever fails in it is explained here.
        """
        try:
            return self._predict(*arguments)
        except ModuleNotFoundError as exc:
            missing = missing_module(self.spec, exc)
            if missing is None:
                raise
            raise PredictionError(missing) from exc
        except (SystemError, NameError) as exc:
            if self._built_on is not None:
                raise  # this Python built it: the function's own error
            raise PredictionError(
                f"model '{self.spec.name}': its function raised {type(exc).__name__}: "
                f"{first_line(exc)}; {unknown_python_hint(sys.version_info.minor)}"
            ) from exc


def load(spec: ModelSpec, path: Path, features: list[str] | None) -> NumeraiPickleModel:
    """Unpickle the function, if the manifest trusts the file, and count its parameters."""
    require_trust(spec)
    predict, built_on = unpickle(spec, path, pd.read_pickle)
    if not callable(predict):
        hint = '; it has predict(): use "format": "sklearn"' if hasattr(predict, "predict") else ""
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.file}' holds a {type(predict).__name__}; expected a "
            f"predict(live_features[, live_benchmark_models]) function, as Numerai's uploads take{hint}"
        )
    try:
        parameters = len(inspect.signature(predict).parameters)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"model '{spec.name}': the signature of its function cannot be read ({exc})"
        ) from None
    if parameters not in (1, 2):
        raise ModelLoadError(
            f"model '{spec.name}': its function takes {parameters} parameters; Numerai's runner "
            "calls it with one (live_features) or two (live_features, live_benchmark_models), "
            "counting parameters that have defaults"
        )
    return NumeraiPickleModel(spec, predict, parameters, built_on)


def check_result(spec: ModelSpec, result: Any) -> None:
    """Numerai's runner's checks on what the function returned, with its order of checks."""
    name = spec.name
    if result is None:
        raise PredictionError(
            f"model '{name}': its function returned None; it must return a DataFrame"
        )
    if type(result) is not pd.DataFrame:
        raise PredictionError(
            f"model '{name}': its function returned {type(result).__name__}; Numerai's runner "
            "accepts exactly a pandas DataFrame (wrap a Series with .to_frame('prediction'))"
        )
    if len(result) == 0:
        raise PredictionError(f"model '{name}': its function returned an empty DataFrame")
    nan_rows = int(result.isna().any(axis=1).sum())
    if nan_rows:
        raise PredictionError(f"model '{name}': its function returned NaN in {nan_rows} rows")
    first = result.iloc[:, 0]
    if not first.between(0, 1).all():
        raise PredictionError(
            f"model '{name}': its function returned values outside [0, 1] in column "
            f"'{first.name}' (from {first.min()!r} to {first.max()!r}); Numerai's runner refuses them"
        )


def check_index(spec: ModelSpec, result: pd.DataFrame) -> None:
    """Beyond the runner: say how to fix an index that cannot be the live ids named `id`.

    `to_csv()` writes the index as the first column, which Numerai reads as the
    ids; the runner uploads whatever it is, and Numerai answers only "headers
    must be one of ['id']" (or counts no live id, for a RangeIndex named `id`).
    """
    index = result.index
    if isinstance(index, pd.RangeIndex):
        found = "is a RangeIndex (0, 1, 2, …)"
    elif index.nlevels > 1:
        found = f"has {index.nlevels} levels ({', '.join(map(str, index.names))})"
    elif index.name is None:
        found = "is unnamed"
    elif index.name != ID_COLUMN:
        found = f"is named '{index.name}'"
    else:
        return
    raise PredictionError(
        f"model '{spec.name}': its function returned a DataFrame whose index {found}; the index "
        f"must be the live ids, named '{ID_COLUMN}', as DataFrame.to_csv() writes the index as the "
        "ids' column: return pd.DataFrame(predictions, index=live_features.index, "
        "columns=['prediction']), or add .rename_axis('id')"
    )


def read_parquet(path: Path) -> pd.DataFrame:
    """A round file read as Numerai's runner reads it, with a readable error."""
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow's and pandas' own error types
        raise DataError(f"{path.name}: not a readable parquet file ({exc})") from None
