"""ONNX graphs (from skl2onnx, onnxmltools, `torch.onnx.export`, …) run by onnxruntime on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import ModelLoadError
from shared.formats.base import BatchModel, as_one_column, check_width, columns_for, first_line
from shared.manifest import ModelSpec


class OnnxModel(BatchModel):
    """An onnxruntime session with one float input."""

    def __init__(
        self, spec: ModelSpec, columns: list[str], session: Any, input_name: str, dtype: type
    ) -> None:
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
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.file}' has {len(inputs)} inputs; expected one"
        )
    dtype = {"tensor(float)": np.float32, "tensor(double)": np.float64}.get(inputs[0].type)
    if dtype is None:
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.file}' takes {inputs[0].type}; expected a float tensor"
        )
    width = (
        inputs[0].shape[-1] if inputs[0].shape else None
    )  # a name such as "N" when the graph leaves it open
    if isinstance(width, int):
        return OnnxModel(
            spec, columns_for(spec, features, None, width), session, inputs[0].name, dtype
        )
    columns = columns_for(spec, features, None)
    width = open_width(spec, path, inputs[0].name, len(columns))
    check_width(spec, width, columns)
    model = OnnxModel(spec, columns, session, inputs[0].name, dtype)
    if width is None:
        model.warnings.append(
            f"model '{spec.name}': the ONNX model's input width is dynamic and its graph does not say how "
            f"many features it takes; the manifest's {len(columns)} features were fed unchecked"
        )
    return model


def open_width(spec: ModelSpec, path: Path, input_name: str, given: int) -> int | None:
    """How many features a graph whose input width is left open takes; None when it does not say.

    The weights the input is first multiplied by say it; failing those, onnx shape
    inference in strict mode tells whether the graph fits `given` features (and
    not one more). Raises ModelLoadError when the graph cannot take `given`.
    """
    import onnx

    graph_model = onnx.load(
        str(path), load_external_data=False
    )  # shapes suffice, not weight values
    weights = _first_weights_rows(graph_model.graph, input_name)
    if weights is not None:
        return weights
    declared = next(
        i for i in graph_model.graph.input if i.name == input_name
    ).type.tensor_type.shape.dim
    if not declared:
        return None  # not even the number of dimensions is recorded
    mismatch = _inference_error(graph_model, declared[-1], given)
    if mismatch is None:
        return given if _inference_error(graph_model, declared[-1], given + 1) else None
    if _inference_error(graph_model, declared[-1], None) is None:
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.file}' does not take {given} features, its manifest entry's "
            f"count: the graph's shapes do not fit that width ({mismatch}); check 'features'"
        )
    return None  # inference fails whatever the width: it cannot tell


def _first_weights_rows(graph: Any, input_name: str) -> int | None:
    """The rows of the weight matrix a MatMul or Gemm takes the input straight into, if one does."""
    weights = {tensor.name: list(tensor.dims) for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm") or list(node.input[:1]) != [input_name]:
            continue
        dims = weights.get(node.input[1], [])
        flags = {attribute.name: attribute.i for attribute in node.attribute}
        if len(dims) == 2 and not flags.get("transA"):
            return dims[1] if flags.get("transB") else dims[0]
    return None


def _inference_error(graph_model: Any, dim: Any, width: int | None) -> str | None:
    """Shape inference's complaint with the input width set to `width` (None: left open); None if it has none."""
    import onnx

    if width is None:
        dim.dim_param = "n_features"
    else:
        dim.dim_value = width
    try:
        onnx.shape_inference.infer_shapes(
            graph_model, check_type=True, strict_mode=True, data_prop=True
        )
    except onnx.shape_inference.InferenceError as exc:
        return first_line(exc)
    return None
