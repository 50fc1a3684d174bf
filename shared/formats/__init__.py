"""Model formats: one module per format, each with a `load(spec, path, features)` function.

Only a model's worker process imports a format module (and with it the
framework), so the Functions host never pays for TensorFlow or LightGBM.
Before a loader runs, the file's first bytes are compared with what the
manifest says it is, so a file of another format is named as such instead of
failing deep inside a framework; and a format whose library the deployment
was built without (PACKAGE_FORMATS) is named as such instead of failing on
an import.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from shared.errors import ModelLoadError
from shared.formats.base import BatchModel, LoadedModel, WholeRoundModel, first_line
from shared.formats.sniff import mismatch
from shared.manifest import ModelSpec

__all__ = ["BatchModel", "LoadedModel", "WholeRoundModel", "load_model", "missing_library"]

# The modules each format's loader imports, and the library's name for people. A deployment
# package built with PACKAGE_FORMATS leaving a format out (devkit/package.py) lacks them.
FORMAT_LIBRARIES: dict[str, tuple[tuple[str, ...], str]] = {
    "keras": (("keras", "tensorflow"), "TensorFlow"),
    "catboost": (("catboost",), "CatBoost"),
    "lightgbm": (("lightgbm",), "LightGBM"),
    "xgboost": (("xgboost",), "XGBoost"),
    "onnx": (("onnx", "onnxruntime"), "ONNX Runtime"),
    "sklearn": (("sklearn",), "scikit-learn"),
    "numerai_pickle": (("cloudpickle",), "cloudpickle"),
}


def missing_library(format_name: str) -> str | None:
    """Why a format cannot load here (its library is not installed), or None; imports nothing."""
    modules, library = FORMAT_LIBRARIES[format_name]
    if all(importlib.util.find_spec(module) is not None for module in modules):
        return None
    return (
        f"this deployment was built without {library}: add {format_name} to PACKAGE_FORMATS "
        "and deploy again"
    )


def load_model(spec: ModelSpec, path: Path, features: list[str] | None) -> LoadedModel:
    """Load `path` as `spec.format`, taking `features` (None: the names the file records).

    Raises ModelLoadError naming the model and the file for anything that goes
    wrong, including a file that is not of the declared format.
    """
    if not path.is_file():
        raise ModelLoadError(f"model '{spec.name}': model file '{spec.file}' does not exist")
    wrong = mismatch(spec, path)
    if wrong is not None:
        raise ModelLoadError(wrong)
    missing = missing_library(spec.format.value)
    if missing is not None:
        raise ModelLoadError(f"model '{spec.name}': {missing}")
    module = importlib.import_module(f"shared.formats.{spec.format.value}")
    try:
        return module.load(spec, path, features)
    except ModelLoadError:
        raise
    except Exception as exc:  # a framework's own error, whatever its type
        raise ModelLoadError(
            f"model '{spec.name}': cannot load '{spec.file}' as {spec.format.value}: {first_line(exc)}"
        ) from exc
