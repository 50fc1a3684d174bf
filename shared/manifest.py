"""The model manifest: a JSON file that lists the models to run each round.

Example::

    {
      "models": [
        {"name": "my_mlp", "file": "my_mlp.keras", "format": "keras", "features": "all"},
        {"name": "my_gbm", "file": "gbm.txt", "format": "lightgbm", "features": "medium"},
        {"name": "my_onnx", "file": "ridge.onnx", "format": "onnx",
         "features": ["feature_a", "feature_b"], "output": "raw"},
        {"name": "my_upload", "file": "predict.pkl", "format": "numerai_pickle",
         "trust_pickle": true},
        {"name": "my_xgb", "file": "xgb.json", "format": "xgboost"}
      ]
    }

The manifest is validated as a whole when it is loaded, so a typo fails the run
before any data is downloaded, with a message that names the file, the entry and
the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.errors import ManifestError

# Numerai model names are lowercase letters, digits and underscores; the name is
# also used in blob names and file names, so nothing else may pass.
MODEL_NAME_PATTERN = r"^[a-z0-9_]{1,64}$"
# Azure's limit for a blob name.
MAX_FILE_CHARS = 1024
# A feature set's or column's name; Numerai's are under 100 characters.
MAX_FEATURE_CHARS = 200
FeatureName = Annotated[str, Field(max_length=MAX_FEATURE_CHARS)]


class ModelFormat(str, Enum):
    """The model file formats the app can load."""

    KERAS = "keras"
    LIGHTGBM = "lightgbm"
    ONNX = "onnx"
    NUMERAI_PICKLE = "numerai_pickle"
    SKLEARN = "sklearn"  # a joblib/pickle file of any object with predict()
    XGBOOST = "xgboost"
    CATBOOST = "catboost"


# Loading these runs code stored in the file.
PICKLE_FORMATS = frozenset({ModelFormat.NUMERAI_PICKLE, ModelFormat.SKLEARN})
# These files record no feature names, so the manifest must list the features.
UNNAMED_FORMATS = frozenset({ModelFormat.KERAS, ModelFormat.ONNX})


class OutputTransform(str, Enum):
    """How a model's raw outputs become submission values."""

    RANK = "rank"  # percentile rank in (0, 1], as Numerai's example models do
    RAW = "raw"  # the outputs as they are; they must already lie in [0, 1]


class PredictMethod(str, Enum):
    """Which method of a scikit-learn-API estimator predicts."""

    PREDICT = "predict"
    # The expected class value under predict_proba (for 0/1 classes, P(class 1)).
    PREDICT_PROBA = "predict_proba"


class ModelSpec(BaseModel):
    """One manifest entry: a Numerai model and the file that predicts for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The length is checked before the pattern, whose message quotes the name.
    name: Annotated[str, Field(max_length=64)]
    file: Annotated[str, Field(min_length=1, max_length=MAX_FILE_CHARS)]
    format: ModelFormat
    # A feature set of features.json, or the columns; None: the names the model
    # file records (or, for a Numerai pickle, every column, as Numerai passes them).
    features: FeatureName | list[FeatureName] | None = None
    output: OutputTransform = OutputTransform.RANK
    # Numerai fills missing feature values with the middle bin; a model trained
    # on NaN-aware data can ask for None to see NaN instead.
    fill_missing: float | None = 2.0
    trust_pickle: bool = False
    method: PredictMethod = PredictMethod.PREDICT

    @model_validator(mode="before")
    @classmethod
    def _hosted_runner_defaults(cls, data: Any) -> Any:
        # Numerai's runner neither fills NaN nor ranks: an upload pickle gets the
        # same defaults here, so it predicts as it does on Numerai.
        if isinstance(data, dict) and data.get("format") == ModelFormat.NUMERAI_PICKLE.value:
            data = {"fill_missing": None, "output": OutputTransform.RAW.value, **data}
        return data

    @field_validator("name")
    @classmethod
    def _numerai_model_name(cls, value: str) -> str:
        if not re.fullmatch(MODEL_NAME_PATTERN, value):
            raise ValueError(
                f"{value!r} is not a Numerai model name (1 to 64 lowercase letters, digits, '_')"
            )
        return value

    @field_validator("file")
    @classmethod
    def _relative_path(cls, value: str) -> str:
        if value.startswith("/") or ".." in Path(value).parts:
            raise ValueError("must be a path relative to the manifest, without '..'")
        return value

    @field_validator("features")
    @classmethod
    def _features_not_empty(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value is None:
            return value
        if isinstance(value, list):
            if not value:
                raise ValueError("the feature list is empty")
            duplicated = sorted({f for f in value if value.count(f) > 1})
            if duplicated:
                raise ValueError(f"features listed twice: {', '.join(duplicated[:5])}")
        elif not value:
            raise ValueError("name a feature set (such as 'medium') or list the columns")
        return value

    @model_validator(mode="after")
    def _fields_fit_the_format(self) -> ModelSpec:
        if self.trust_pickle and self.format not in PICKLE_FORMATS:
            raise ValueError("trust_pickle only applies to formats 'numerai_pickle' and 'sklearn'")
        if self.method is not PredictMethod.PREDICT and self.format is not ModelFormat.SKLEARN:
            raise ValueError("method only applies to format 'sklearn'")
        if self.features is not None and self.format is ModelFormat.NUMERAI_PICKLE:
            raise ValueError(
                "field 'features' does not apply to format 'numerai_pickle': its function gets every "
                "column of live.parquet, as on Numerai; select columns inside the function"
            )
        if self.features is None and self.format in UNNAMED_FORMATS:
            raise ValueError(
                f"field 'features' is required for format '{self.format.value}', whose files do not "
                "record feature names: name a feature set (such as \"medium\") or list the columns"
            )
        return self

    def digest(self) -> str:
        """A short fingerprint of the entry: archived predictions are reused only under an equal one."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


class Manifest(BaseModel):
    """The whole manifest: the models to run, in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: Annotated[list[ModelSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_names(self) -> Manifest:
        names = [m.name for m in self.models]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"model names listed twice: {', '.join(duplicated)}")
        return self

    def select(self, names: list[str] | None) -> Manifest:
        """The manifest restricted to `names` (all models when None).

        An unknown name is an error listing the names the manifest has.
        """
        if not names:
            return self
        known = {m.name for m in self.models}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ManifestError(
                f"model(s) {', '.join(repr(n) for n in unknown)} are not in the manifest; "
                f"it lists: {', '.join(sorted(known))}"
            )
        return Manifest(models=[m for m in self.models if m.name in names])


def parse_manifest(text: str, source: str) -> Manifest:
    """Parse and validate manifest JSON; `source` names the file in errors."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{source}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ManifestError(f"{source}: not a manifest: its JSON nests too deeply to be read") from None
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(_describe(exc, raw, source)) from None


def load_manifest(path: Path) -> Manifest:
    """Read and validate the manifest file at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"{path}: cannot be read ({exc.strerror})") from None
    return parse_manifest(text, str(path))


def _describe(exc: ValidationError, raw: object, source: str) -> str:
    """Turn pydantic's errors into lines naming the entry and the field."""
    lines = []
    for error in exc.errors():
        loc = list(error["loc"])
        where = source
        if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
            where += f": model #{loc[1] + 1}{_entry_name(raw, loc[1])}"
            loc = loc[2:]
        field = ".".join(str(part) for part in loc if not _is_type_tag(part))
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: field '{field}': {message}" if field else f"{where}: {message}")
    return "\n".join(lines)


def _entry_name(raw: object, index: int) -> str:
    try:
        name = raw["models"][index]["name"]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        return ""
    if not isinstance(name, str):
        return ""
    return f" ({name!r})" if len(name) <= 64 else f" ({name[:64]!r}…)"


def _is_type_tag(part: object) -> bool:
    # pydantic adds the union member tried ("str", "list[str]") to the location.
    return isinstance(part, str) and (part in {"str", "list[str]", "constrained-str", "list[constrained-str]", "none"})
