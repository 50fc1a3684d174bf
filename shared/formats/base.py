"""What every model format provides, and the checks they share.

A format module loads a file into one of two kinds of model:
- a `BatchModel` predicts one float32 batch of feature rows at a time, so memory
  holds one batch whatever the size of the round (Keras, LightGBM, ONNX,
  scikit-learn-API estimators, XGBoost, CatBoost);
- a `WholeRoundModel` gets the whole round at once, exactly as Numerai's hosted
  runner calls an uploaded pickle.

Format modules import their framework inside their loader: they run only in a
model's worker process, never in the Functions host's.
"""

from __future__ import annotations

import importlib.util
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import ModelLoadError, PredictionError
from shared.formats.pickle_python import (
    TOLD_APART,
    built_on,
    mismatch_advice,
    unknown_python_hint,
)
from shared.formats.runner_packages import runner_package
from shared.manifest import ModelSpec


class BatchModel(ABC):
    """A model that predicts one float32 batch of feature rows at a time.

    `columns` are the live data's columns it takes, in the order it was trained on;
    `warnings` what the report should say about a model that runs but could not be fully checked.
    """

    def __init__(self, spec: ModelSpec, columns: list[str]) -> None:
        self.spec = spec
        self.columns = columns
        self.warnings: list[str] = []

    @abstractmethod
    def predict_batch(self, features: np.ndarray) -> np.ndarray:
        """Predict for `features` (rows × `columns`); one value per row."""


class WholeRoundModel(ABC):
    """A model that is handed the round's files and returns its submission CSV text."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.warnings: list[str] = []

    @abstractmethod
    def predict_round(self, live_path: Path, benchmark_path: Path | None) -> tuple[str, Any]:
        """Predict the whole round; returns (submission CSV text, the live ids)."""


LoadedModel = BatchModel | WholeRoundModel


def as_one_column(spec: ModelSpec, output: Any, rows: int) -> np.ndarray:
    """Flatten a model's output to one value per row, or say why it cannot be."""
    values = np.asarray(output)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or values.shape[0] != rows:
        raise PredictionError(
            f"model '{spec.name}': returned an output of shape {values.shape} for {rows} rows; "
            "expected one value per row"
        )
    return values


def columns_for(
    spec: ModelSpec, features: list[str] | None, recorded: list[str] | None, width: Any = None
) -> list[str]:
    """The columns a model takes: the manifest's, checked against the file's own record.

    `recorded` is the feature names the file stores (None when it stores none, or
    only placeholders); `width` is how many inputs it takes, checked when it
    records no names (None when unknown). Without a manifest list the recorded
    names are used.
    """
    if features is None:
        if recorded is None:
            raise ModelLoadError(
                f"model '{spec.name}': '{spec.file}' does not record its feature names; give "
                "'features' in its manifest entry (a feature set such as \"medium\", or the columns)"
            )
        return recorded
    if recorded is None:
        check_width(spec, width, features)
    else:
        check_width(spec, len(recorded), features)
        check_names(spec, recorded, features)
    return features


def check_width(spec: ModelSpec, width: Any, features: list[str]) -> None:
    """Raise unless a model's input width (None when unknown) equals the manifest's feature count."""
    if width is not None and int(width) != len(features):
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.file}' takes {width} features but its manifest entry "
            f"gives {len(features)}; check 'features'"
        )


def check_names(spec: ModelSpec, trained_on: list[str], features: list[str]) -> None:
    """Compare the column names a model file records with the manifest's, position by position."""
    for position, (trained, given) in enumerate(zip(trained_on, features, strict=True)):
        if trained != given:
            raise ModelLoadError(
                f"model '{spec.name}': '{spec.file}' was trained with '{trained}' as feature "
                f"#{position + 1}, but its manifest entry gives '{given}'; the order must match training"
            )


def require_trust(spec: ModelSpec) -> None:
    """Refuse to open a file whose loading runs code, unless the manifest says it is trusted."""
    if not spec.trust_pickle:
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.file}' is a pickle, and loading a pickle runs the code "
            'inside it. Add "trust_pickle": true to this manifest entry only if you made the '
            "file or trust whoever did."
        )


def unpickle(spec: ModelSpec, path: Path, reader: Callable[[Path], Any]) -> tuple[Any, int | None]:
    """Read a pickle with `reader`, turning the usual failures into what a participant can act on.

    Returns the object and the minor version of the Python its code objects say
    built it (None: not told; see shared/formats/pickle_python.py). A pickle of
    another Python is refused before it is read: loaded, it would crash or fail
    when called, blaming something else.
    """
    running = sys.version_info.minor
    built = built_on(path)
    if built is not None and built != running and running in TOLD_APART:
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.file}' was built on Python 3.{built}; this deployment "
            f"runs 3.{running}: {mismatch_advice(built, running)}"
        )
    try:
        return reader(path), built
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(_missing_code(spec, exc)) from None
    except (TypeError, ValueError, SystemError) as exc:
        # Code objects change between Python versions; their constructor is where it shows.
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.file}' cannot be unpickled ({first_line(exc)}); "
            f"{unknown_python_hint(running)}"
        ) from None


def _missing_code(spec: ModelSpec, exc: BaseException) -> str:
    """Why a pickle names a module or class that cannot be imported here, and what to do."""
    missing = missing_module(spec, exc)
    if missing is not None:
        return missing
    found = (
        f"model '{spec.name}': '{spec.file}' needs code this app does not have ({first_line(exc)})"
    )
    if "__main__" in str(exc):
        # pickle stores a class by name; one defined in a notebook or script is not in the file.
        return (
            f"{found}: a class defined in the notebook or script that saved it. Save it with "
            "cloudpickle.dump, which stores such classes in the file"
        )
    # Another version of a library: scikit-learn's private modules move.
    return (
        f"{found}; it was pickled with other library versions than these ({_versions()}). "
        "Save it again with these, or in a format that does not depend on versions: "
        "XGBoost .json, CatBoost .cbm, LightGBM .txt or ONNX"
    )


def missing_module(spec: ModelSpec, exc: BaseException) -> str | None:
    """The message for a model that imports a module not installed here; None for other errors.

    Says whether Numerai's runner has it (its lock for this Python), since a
    pickle that runs there is expected to run here.
    """
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    if importlib.util.find_spec(top) is not None:
        return None  # the package is here: one of its modules moved between versions
    found = (
        f"model '{spec.name}': '{spec.file}' needs the module '{exc.name}', which this "
        "deployment does not have"
    )
    package = runner_package(exc.name)
    if package is None:
        return f"{found} (nor does Numerai's runner); save the model without it"
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    version = package.versions.get(python) or next(v for v in package.versions.values() if v)
    found = f"{found} (Numerai's runner has {package.name} {version})"
    if package.name == "torch":
        return f"{found}; export it to ONNX (see README)"
    return f"{found}; add {package.name}=={version} to requirements.txt and deploy again"


def _versions() -> str:
    """The installed versions of the libraries whose objects participants pickle."""
    from importlib import metadata

    found = []
    for name in ("scikit-learn", "lightgbm", "xgboost", "catboost"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, bounded, for a one-line error message."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
