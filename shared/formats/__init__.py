"""Model formats: one module per format, each with a `load(spec, path, features)` function.

Only a model's worker process imports a format module (and with it the
framework), so the Functions host never pays for TensorFlow or LightGBM.
Before a loader runs, the file's first bytes are compared with what the
manifest says it is, so a file of another format is named as such instead of
failing deep inside a framework.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from shared.errors import ModelLoadError
from shared.formats.base import BatchModel, LoadedModel, WholeRoundModel, first_line
from shared.formats.sniff import mismatch
from shared.manifest import ModelSpec

__all__ = ["BatchModel", "LoadedModel", "WholeRoundModel", "load_model"]


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
    module = importlib.import_module(f"shared.formats.{spec.format.value}")
    try:
        return module.load(spec, path, features)
    except ModelLoadError:
        raise
    except Exception as exc:  # a framework's own error, whatever its type
        raise ModelLoadError(
            f"model '{spec.name}': cannot load '{spec.file}' as {spec.format.value}: {first_line(exc)}"
        ) from exc
