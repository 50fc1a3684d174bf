"""Telling a model file's format from its first bytes, to name a file saved in another format.

Reading the head of a file runs nothing, so this is safe for untrusted pickles.
A file whose bytes say nothing clear is left to the declared format's loader.
"""

from __future__ import annotations

import re
from pathlib import Path

from shared.manifest import ModelFormat, ModelSpec

HEAD_BYTES = 256

# What a kind of file is called in a message, and the format that loads it.
_KINDS: dict[str, tuple[str, ModelFormat | None]] = {
    "pickle": ("a pickle or joblib file", None),
    "keras": ("a Keras model", ModelFormat.KERAS),
    "lightgbm": ("a LightGBM text model", ModelFormat.LIGHTGBM),
    "lightgbm_json": ("a LightGBM JSON dump (dump_model), which LightGBM cannot load", None),
    "xgboost": ("an XGBoost model", ModelFormat.XGBOOST),
    "catboost": ("a CatBoost model", ModelFormat.CATBOOST),
    "catboost_json": ("a CatBoost JSON model", None),
    "onnx": ("an ONNX model", ModelFormat.ONNX),
}

_ACCEPTS: dict[ModelFormat, frozenset[str]] = {
    ModelFormat.NUMERAI_PICKLE: frozenset({"pickle"}),
    ModelFormat.SKLEARN: frozenset({"pickle"}),
    ModelFormat.KERAS: frozenset({"keras"}),
    ModelFormat.LIGHTGBM: frozenset({"lightgbm"}),
    ModelFormat.XGBOOST: frozenset({"xgboost"}),
    ModelFormat.CATBOOST: frozenset({"catboost"}),
    ModelFormat.ONNX: frozenset({"onnx"}),
}

# Compressed containers joblib writes (zlib, gzip, bz2, xz, lzma, lz4) hold a pickle.
_COMPRESSED = (
    b"\x78\x01",
    b"\x78\x5e",
    b"\x78\x9c",
    b"\x78\xda",
    b"\x1f\x8b",
    b"BZh",
    b"\xfd7zXZ",
    b"\x5d\x00\x00",
    b"\x04\x22\x4d\x18",
    b"ZF0x",
)
# Protocols 0 and 1 have no header; an object's pickle opens with GLOBAL "c<module>\n<name>\n".
_OLD_PICKLE = re.compile(rb"c[A-Za-z_][\w.]*\n[A-Za-z_][\w.]*\n")
# JSON may open with a UTF-8 byte order mark or whitespace, left by an editor or a re-indent.
_JSON_LEAD = b"\xef\xbb\xbf \t\r\n"
_BLANKS = re.compile(rb"[ \t\r\n]+")


def sniff(head: bytes) -> str | None:
    """The kind of model file `head` (its first bytes) starts, or None if unclear."""
    if (
        head[:1] == b"\x80"
        and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
        or head.startswith(_COMPRESSED)
    ):
        return "pickle"
    if _OLD_PICKLE.match(head):
        return "pickle"
    if head.startswith((b"PK\x03\x04", b"\x89HDF\r\n\x1a\n")):
        return "keras"  # a .keras zip or a legacy HDF5 file
    if head.startswith(b"CBM1"):
        return "catboost"
    if head.startswith((b"tree\n", b"tree\r\n")):
        return "lightgbm"
    if head[:1] == b"\x08" and (b"\x12" in head[:16] or b":" in head[:16]):
        return "onnx"  # protobuf: ir_version first, then producer or graph
    text = head.lstrip(_JSON_LEAD)
    if text.startswith(b"{"):
        return _json_kind(_BLANKS.sub(b"", text))
    return None


def detect_format(head: bytes) -> tuple[ModelFormat | None, str | None]:
    """The format that loads a file starting with `head`, and what the file looks like.

    (None, None): the bytes say nothing clear; (None, "a pickle or joblib file"): a kind no
    single format loads, or that none loads.
    """
    kind = sniff(head)
    if kind is None:
        return None, None
    looks_like, loads_as = _KINDS[kind]
    return loads_as, looks_like


def _json_kind(head: bytes) -> str | None:
    """The kind of a JSON or UBJSON model from its first keys (`head` without spaces)."""
    # XGBoost's writers sort keys, so "learner" comes first: quoted in JSON,
    # after its length (7) in UBJSON; a re-saved file may put "version" first.
    if b'"learner":{' in head or b"\x07learner{" in head:
        return "xgboost"
    if b'"tree_info"' in head or b'"name":"tree"' in head:
        return "lightgbm_json"
    if b'"features_info"' in head or b'"oblivious_trees"' in head or b'"model_info"' in head:
        return "catboost_json"
    return None


def mismatch(spec: ModelSpec, path: Path) -> str | None:
    """A message when the file looks like another format than its manifest entry says; else None."""
    with path.open("rb") as handle:
        kind = sniff(handle.read(HEAD_BYTES))
    if kind is None or kind in _ACCEPTS[spec.format]:
        return None
    looks_like, loads_as = _KINDS[kind]
    if kind == "pickle":
        advice = (
            'use "sklearn" for a saved estimator or pipeline, or "numerai_pickle" for a '
            "function made for Numerai's model uploads"
        )
    elif kind == "lightgbm_json":
        advice = "save the booster with booster.save_model('model.txt') and use \"lightgbm\""
    elif kind == "catboost_json":
        advice = (
            "save it with model.save_model('model.cbm'), CatBoost's binary format, "
            'and use "catboost"'
        )
    else:
        advice = (
            f'set "format": "{loads_as.value}"' if loads_as else "save it in a supported format"
        )
    return (
        f"model '{spec.name}': '{spec.file}' is declared \"{spec.format.value}\" but looks like "
        f"{looks_like}; {advice}"
    )
