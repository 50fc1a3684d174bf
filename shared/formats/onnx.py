"""ONNX graphs (from skl2onnx, onnxmltools, `torch.onnx.export`, …) run by onnxruntime on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import ModelLoadError
from shared.formats.base import BatchModel, as_one_column, columns_for
from shared.manifest import ModelSpec


class OnnxModel(BatchModel):
    """An onnxruntime session with one float input."""

    def __init__(self, spec: ModelSpec, columns: list[str], session: Any, input_name: str, dtype: type) -> None:
        super().__init__(spec, columns)
        self._session = session
        self._input_name = input_name
        self._dtype = dtype

    def predict_batch(self, features: np.ndarray) -> np.ndarray:
        feed = {self._input_name: features.astype(self._dtype, copy=False)}
        output = self._session.run(None, feed)[0]
        return as_one_column(self.spec, output, features.shape[0])


def load(spec: ModelSpec, path: Path, features: list[str] | None) -> OnnxModel:
    """Load a graph with one float tensor input; the manifest must list its features."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelLoadError(f"model '{spec.name}': '{spec.file}' has {len(inputs)} inputs; expected one")
    dtype = {"tensor(float)": np.float32, "tensor(double)": np.float64}.get(inputs[0].type)
    if dtype is None:
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.file}' takes {inputs[0].type}; expected a float tensor"
        )
    width = inputs[0].shape[-1]  # a name such as "N" when the graph leaves it open
    columns = columns_for(spec, features, None, width if isinstance(width, int) else None)
    return OnnxModel(spec, columns, session, inputs[0].name, dtype)
