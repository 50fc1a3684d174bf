"""Telling a model file's format from its first bytes, to name a file saved in another format.

Reading the head of a file runs nothing, so this is safe for untrusted pickles.
A file whose bytes say nothing clear is left to the declared format's loader.
"""

from __future__ import annotations

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
_COMPRESSED = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda", b"\x1f\x8b", b"BZh",
               b"\xfd7zXZ", b"\x5d\x00\x00", b"\x04\x22\x4d\x18", b"ZF0x")


def sniff(head: bytes) -> str | None:
    """The kind of model file `head` (its first bytes) starts, or None if unclear."""
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") or head.startswith(_COMPRESSED):
        return "pickle"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "keras"  # a .keras zip or a legacy HDF5 file
    if head.startswith(b"CBM1"):
        return "catboost"
    if head.startswith(b"tree\n") or head.startswith(b"tree\r\n"):
        return "lightgbm"
    if head.startswith(b"{"):
        if b"learner" in head:
            return "xgboost"  # JSON or UBJSON: both open with the "learner" key
        if b"tree_info" in head or b'"name":"tree"' in head.replace(b" ", b""):
            return "lightgbm_json"
        return None
    if head[:1] == b"\x08" and (b"\x12" in head[:16] or b":" in head[:16]):
        return "onnx"  # protobuf: ir_version first, then producer or graph
    return None


def mismatch(spec: ModelSpec, path: Path) -> str | None:
    """A message when the file looks like another format than its manifest entry says; else None."""
    with path.open("rb") as handle:
        kind = sniff(handle.read(HEAD_BYTES))
    if kind is None or kind in _ACCEPTS[spec.format]:
        return None
    looks_like, loads_as = _KINDS[kind]
    if kind == "pickle":
        advice = ('use "sklearn" for a saved estimator or pipeline, or "numerai_pickle" for a '
                  "function made for Numerai's model uploads")
    elif kind == "lightgbm_json":
        advice = "save the booster with booster.save_model('model.txt') and use \"lightgbm\""
    else:
        advice = f'set "format": "{loads_as.value}"' if loads_as else "save it in a supported format"
    return (f"model '{spec.name}': '{spec.file}' is declared \"{spec.format.value}\" but looks like "
            f"{looks_like}; {advice}")
