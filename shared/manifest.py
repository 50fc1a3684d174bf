"""The model manifest: a JSON file that lists the models to run each round.

Example::

    {
      "models": [
        {"name": "my_mlp", "file": "my_mlp.keras", "format": "keras", "features": "all"},
        {"name": "my_gbm", "file": "gbm.txt", "format": "lightgbm", "features": "medium",
         "data_version": "v5.2"},
        {"name": "my_onnx", "file": "ridge.onnx", "format": "onnx",
         "features": ["feature_a", "feature_b"], "output": "raw"},
        {"name": "my_upload", "file": "predict.pkl", "format": "numerai_pickle",
         "trust_pickle": true},
        {"name": "my_xgb", "file": "xgb.json", "format": "xgboost", "submit": false},
        {"name": "my_blend", "members": {"my_gbm": 2, "my_xgb": 1},
         "neutralize": {"proportion": 0.5, "features": "small"},
         "min_benchmark_corr": 0.2, "max_benchmark_corr_drop": 0.3}
      ]
    }

An entry with `members` is an ensemble: the weighted rank average of its
members' predictions (members may themselves be ensembles). Any entry may be
neutralized against a feature set or columns; `submit: false` predicts an entry
only to feed ensembles. `min_benchmark_corr` and `max_benchmark_corr_drop` stop
the upload of predictions whose correlation with Numerai's benchmark is too low,
or has fallen too far below the entry's recent rounds.

The manifest is validated as a whole when it is loaded, so a typo fails the run
before any data is downloaded, with a message that names the file, the entry and
the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from shared.errors import ManifestError

# Numerai model names are lowercase letters, digits and underscores; the name is
# also used in blob names and file names, so nothing else may pass.
MODEL_NAME_PATTERN = r"^[a-z0-9_]{1,64}$"
# Azure's limit for a blob name.
MAX_FILE_CHARS = 1024
# A feature set's or column's name; Numerai's are under 100 characters.
MAX_FEATURE_CHARS = 200
FeatureName = Annotated[str, Field(max_length=MAX_FEATURE_CHARS)]
# A Numerai data version ("v5.2"); it is also a folder name of the run's data.
DATA_VERSION_PATTERN = r"^v\d{1,3}(\.\d{1,3}){0,3}$"


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


class Neutralization(BaseModel):
    """How far to neutralize an entry's predictions, and against which features."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    proportion: Annotated[float, Field(gt=0, le=1)]
    # A feature set of features.json (such as "small"), or the columns.
    features: FeatureName | list[FeatureName]

    @field_validator("features")
    @classmethod
    def _features_not_empty(cls, value: str | list[str]) -> str | list[str]:
        return _check_features(value)


# Stands for the file or format that an entry without members lacks.
_REQUIRED = object()
# Fields only a model file gives meaning to, with their defaults; an ensemble
# combines predictions, so setting one of them on it is a mistake to report.
_FILE_ONLY_FIELDS = (
    "file",
    "format",
    "features",
    "output",
    "fill_missing",
    "trust_pickle",
    "method",
    "data_version",
)
# Fields added with ensembles; left at their defaults they stay out of digest(),
# so the archive of entries that do not use them stays valid across the upgrade.
_COMBINING_FIELDS = (
    "members",
    "neutralize",
    "submit",
    "min_benchmark_corr",
    "max_benchmark_corr_drop",
)
# Never part of digest(): the archive records the version a model's predictions were
# made from (its own, or NUMERAI_DATA_VERSION), so naming the run's version changes nothing.
_NOT_DIGESTED = frozenset({"data_version"})


class ModelSpec(BaseModel):
    """One manifest entry: a Numerai model and the file that predicts for it, or an ensemble of entries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The length is checked before the pattern, whose message quotes the name.
    name: Annotated[str, Field(max_length=64)]
    # Required unless `members` is set (checked in _file_or_members).
    file: Annotated[str, Field(min_length=1, max_length=MAX_FILE_CHARS)] | None = None
    format: ModelFormat | None = None
    # A feature set of features.json, or the columns; None: the names the model
    # file records (or, for a Numerai pickle, every column, as Numerai passes them).
    features: FeatureName | list[FeatureName] | None = None
    output: OutputTransform = OutputTransform.RANK
    # Numerai fills missing feature values with the middle bin; a model trained
    # on NaN-aware data can ask for None to see NaN instead.
    fill_missing: float | None = 2.0
    trust_pickle: bool = False
    method: PredictMethod = PredictMethod.PREDICT
    # Member entry name -> weight; the JSON object's order is kept.
    members: dict[Annotated[str, Field(max_length=64)], float] | None = None
    neutralize: Neutralization | None = None
    # False: predicted only to feed ensembles, never uploaded.
    submit: bool = True
    min_benchmark_corr: Annotated[float, Field(ge=-1, le=1)] | None = None
    # The most the benchmark correlation may fall below the entry's median of recent rounds.
    max_benchmark_corr_drop: Annotated[float, Field(gt=0, le=2)] | None = None
    # The Numerai data version the model was trained on; None: NUMERAI_DATA_VERSION.
    data_version: Annotated[str, Field(max_length=16)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _hosted_runner_defaults(cls, data: Any) -> Any:
        # Numerai's runner neither fills NaN nor ranks: an upload pickle gets the
        # same defaults here, so it predicts as it does on Numerai.
        if isinstance(data, dict) and data.get("format") == ModelFormat.NUMERAI_PICKLE.value:
            data = {"fill_missing": None, "output": OutputTransform.RAW.value, **data}
        if isinstance(data, dict) and data.get("members") is None:
            # Marked here so that pydantic reports a missing file with the entry's other field errors.
            data = {**{name: _REQUIRED for name in ("file", "format") if name not in data}, **data}
        return data

    @field_validator("file", "format", mode="before")
    @classmethod
    def _required_unless_ensemble(cls, value: Any) -> Any:
        if value is _REQUIRED:
            raise PydanticCustomError("missing", "Field required")
        return value

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
    def _relative_path(cls, value: str | None) -> str | None:
        if value is None:
            return value  # an ensemble's; _file_or_members decides whether that is right
        if value.startswith("/") or ".." in Path(value).parts:
            raise ValueError("must be a path relative to the manifest, without '..'")
        return value

    @field_validator("data_version")
    @classmethod
    def _numerai_data_version(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(DATA_VERSION_PATTERN, value):
            raise ValueError(f'{value!r} is not a Numerai data version (such as "v5.2")')
        return value

    @field_validator("features")
    @classmethod
    def _features_not_empty(cls, value: str | list[str] | None) -> str | list[str] | None:
        return value if value is None else _check_features(value)

    @field_validator("members")
    @classmethod
    def _members_weigh_something(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("an ensemble needs at least one member")
        for member, weight in value.items():
            if not math.isfinite(weight):
                raise ValueError(
                    f"the weight of member {member!r} is {weight}, not a finite number"
                )
        if sum(value.values()) <= 0:
            raise ValueError(
                f"the weights add up to {sum(value.values()):g}; their sum must be positive"
            )
        return value

    @model_validator(mode="after")
    def _file_or_members(self) -> ModelSpec:
        if self.members is None:
            for field in ("file", "format"):
                if getattr(self, field) is None:
                    raise _field_error(field, "Field required")
            return self
        for field in _FILE_ONLY_FIELDS:
            if (
                field in self.model_fields_set
                and getattr(self, field) != ModelSpec.model_fields[field].default
            ):
                raise _field_error(
                    field,
                    "does not apply to an ensemble (an entry with 'members'), which combines its members' "
                    "predictions; set it on the members",
                )
        return self

    @model_validator(mode="after")
    def _fields_fit_the_format(self) -> ModelSpec:
        if self.format is None:
            return self  # an ensemble; _file_or_members checked it
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
                'record feature names: name a feature set (such as "medium") or list the columns'
            )
        return self

    @property
    def is_ensemble(self) -> bool:
        """True when the entry combines other entries instead of loading a file."""
        return self.members is not None

    def digest(self) -> str:
        """A short fingerprint of the entry: archived predictions are reused only under an equal one.

        An ensemble's fingerprint covers only its own entry; Manifest.digest adds its members'.
        """
        unused = {
            f for f in _COMBINING_FIELDS if getattr(self, f) == ModelSpec.model_fields[f].default
        }
        return _sha16(self.model_dump_json(exclude=unused | _NOT_DIGESTED))


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

    @model_validator(mode="after")
    def _members_exist_without_cycles(self) -> Manifest:
        members = {m.name: list(m.members or {}) for m in self.models}
        for ensemble in self.models:
            for member in ensemble.members or {}:
                if member not in members:
                    raise ValueError(
                        f"ensemble {ensemble.name!r}: member {member!r} is not in the manifest; "
                        f"it lists: {', '.join(sorted(members))}"
                    )
        cycle = _first_cycle(members)
        if cycle:
            raise ValueError(f"ensemble {cycle[0]!r} includes itself: {' → '.join(cycle)}")
        return self

    def spec(self, name: str) -> ModelSpec:
        """The entry called `name` (KeyError when there is none)."""
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)

    def select(self, names: list[str] | None, submit_members: bool = True) -> Manifest:
        """The manifest restricted to `names` and, transitively, the members of their ensembles (all when None).

        With `submit_members` False, members not named are predicted for their ensembles but not
        submitted: a webhook call is one model's, and each member has a call (and trigger id) of its own.
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
        kept: set[str] = set()
        wanted = list(names)
        while wanted:
            name = wanted.pop()
            if name not in kept:
                kept.add(name)
                wanted.extend(self.spec(name).members or {})
        chosen = [m for m in self.models if m.name in kept]
        if not submit_members:
            chosen = [
                m if m.name in names else m.model_copy(update={"submit": False}) for m in chosen
            ]
        return Manifest(models=chosen)

    def in_order(self) -> list[ModelSpec]:
        """The entries with every ensemble after its members, otherwise in manifest order."""
        placed: list[ModelSpec] = []
        done: set[str] = set()
        waiting = list(self.models)
        while waiting:
            # Validation refused cycles, so some entry is always ready.
            ready = next(m for m in waiting if all(member in done for member in m.members or {}))
            waiting.remove(ready)
            placed.append(ready)
            done.add(ready.name)
        return placed

    def digest(self, name: str) -> str:
        """The fingerprint of entry `name`; an ensemble's changes when any member's, at any depth, does."""
        specs = {m.name: m for m in self.models}
        digests: dict[str, str] = {}  # a member shared by several ensembles is hashed once

        def of(entry: str) -> str:
            if entry not in digests:
                spec = specs[entry]
                parts = [spec.digest(), *(f"{m}={of(m)}" for m in spec.members or {})]
                digests[entry] = parts[0] if not spec.is_ensemble else _sha16("\n".join(parts))
            return digests[entry]

        return of(self.spec(name).name)


def parse_manifest(text: str, source: str) -> Manifest:
    """Parse and validate manifest JSON; `source` names the file in errors."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{source}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ManifestError(
            f"{source}: not a manifest: its JSON nests too deeply to be read"
        ) from None
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


def _sha16(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _first_cycle(members: dict[str, list[str]]) -> list[str] | None:
    """The first chain of members, in manifest order, that leads from an entry back to itself."""
    finished: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        for member in members[name]:
            if member in path:
                return [*path[path.index(member) :], member]
            if member not in finished:
                cycle = visit(member, [*path, member])
                if cycle:
                    return cycle
        finished.add(name)
        return None

    for name in members:
        if name not in finished:
            cycle = visit(name, [name])
            if cycle:
                return cycle
    return None


def _check_features(value: str | list[str]) -> str | list[str]:
    """A feature set's name or a list of distinct columns, refusing empty ones."""
    if isinstance(value, list):
        if not value:
            raise ValueError("the feature list is empty")
        duplicated = sorted({f for f in value if value.count(f) > 1})
        if duplicated:
            raise ValueError(f"features listed twice: {', '.join(duplicated[:5])}")
    elif not value:
        raise ValueError("name a feature set (such as 'medium') or list the columns")
    return value


def _field_error(field: str, message: str) -> PydanticCustomError:
    """An entry-level error that _describe reports under `field`, as pydantic's own field errors are."""
    # The message travels in the context so that braces in it are not read as a template.
    return PydanticCustomError("entry_field", "{message}", {"field": field, "message": message})


def _describe(exc: ValidationError, raw: object, source: str) -> str:
    """Turn pydantic's errors into lines naming the entry and the field."""
    lines = []
    for error in exc.errors():
        loc = list(error["loc"])
        where = source
        if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
            where += f": model #{loc[1] + 1}{_entry_name(raw, loc[1])}"
            loc = loc[2:]
        if error["type"] == "entry_field":
            loc.append(error["ctx"]["field"])
        field = ".".join(_shortened(str(part)) for part in loc if not _is_type_tag(part))
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


def _shortened(part: str) -> str:
    # A dict key (a member's name) is part of the location; do not repeat a huge one.
    return part if len(part) <= 64 else f"{part[:64]}…"


def _is_type_tag(part: object) -> bool:
    # pydantic adds the union member tried ("str", "list[str]") to the location.
    return isinstance(part, str) and (
        part in {"str", "list[str]", "constrained-str", "list[constrained-str]", "none"}
    )
