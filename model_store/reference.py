"""The numpy reference executor of the integer IR: the golden semantics every runtime must match bit for bit.

Convolutions run as im2col + BLAS matmul in floating point, which is exact here: every product q_in * code is
an integer of magnitude at most 255 * 127 and every partial sum at most 255 * sum|code| over the receptive
field, so no sum is ever rounded as long as that bound stays below 2**24 (float32) or 2**53 (float64). Each
layer picks float32 when its bound allows (pow2-4 codes: up to 16,448 taps) and float64 otherwise; the int32
accumulator is then requantized in int64 with `rounding_right_shift`.
"""

import numpy as np

from model_store.ir import (
    Add,
    Concat,
    Conv2d,
    Layer,
    MaxPool2d,
    Model,
    Quant,
    Upsample,
    activation_range,
    derive_requantization,
    layer_inputs,
)
from model_store.requant import rounding_right_shift

FLOAT32_EXACT = 2**24
FLOAT64_EXACT = 2**53


def dequantize(quant: Quant, q: np.ndarray) -> np.ndarray:
    """The real values of uint8 codes: scale * (q - zero_point), as float32."""
    return (np.asarray(q, dtype=np.float32) - np.float32(quant.zero_point)) * np.float32(quant.scale)


def run(model: Model, inputs: np.ndarray | dict[str, np.ndarray], keep_intermediates: bool = False) -> dict:
    """Execute the model on uint8 inputs (B, C, H, W); returns its uint8 outputs by name (every tensor if asked).

    `inputs` is one array for a single-input model or a dict by input name. The model must be valid
    (`Model.validate`; `from_bytes` and the lowering check it); multipliers missing from it are derived first.
    """
    if any(_needs_requantization(layer) for layer in model.layers):
        derive_requantization(model)
    tensors = _checked_inputs(model, inputs)
    for layer in model.layers:
        tensors[layer.output] = _EXECUTORS[type(layer)](layer, model, [tensors[name] for name in layer_inputs(layer)])
    if keep_intermediates:
        return tensors
    return {name: tensors[name] for name in model.outputs}


def _needs_requantization(layer: Layer) -> bool:
    if isinstance(layer, Conv2d):
        return layer.multiplier is None or layer.shift is None
    if isinstance(layer, Add):
        return layer.multipliers is None or layer.shift is None
    if isinstance(layer, Concat):
        return layer.multipliers is None or layer.shifts is None
    return False


def _checked_inputs(model: Model, inputs) -> dict[str, np.ndarray]:
    if isinstance(inputs, np.ndarray):
        if len(model.inputs) != 1:
            raise ValueError(f"the model has inputs {model.inputs}: pass a dict by input name")
        inputs = {model.inputs[0]: inputs}
    if not isinstance(inputs, dict) or set(inputs) != set(model.inputs):
        found = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
        raise ValueError(f"inputs must be given for exactly {model.inputs}, got {found}")
    batch = None
    for name, array in inputs.items():
        expected = model.tensors[name].shape
        if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
            raise ValueError(f"input {name!r} must be a uint8 array")
        if array.ndim != 4 or array.shape[1:] != expected:
            raise ValueError(f"input {name!r} must have shape (B, {', '.join(map(str, expected))}), got {array.shape}")
        if batch not in (None, array.shape[0]):
            raise ValueError(f"inputs differ in batch size: {batch} and {array.shape[0]}")
        batch = array.shape[0]
    return dict(inputs)


def _requantize(accumulator: np.ndarray, multiplier, shift, zero_point: int, bounds: tuple[int, int]) -> np.ndarray:
    scaled = rounding_right_shift(accumulator * multiplier, shift)
    return np.clip(scaled + zero_point, *bounds).astype(np.uint8)


def _conv(layer: Conv2d, model: Model, sources: list[np.ndarray]) -> np.ndarray:
    x = sources[0]
    input_quant = model.tensors[layer.input].quant
    output_spec = model.tensors[layer.output]
    batch = x.shape[0]
    out_channels, group_channels, kernel_h, kernel_w = layer.codes.shape
    groups = layer.groups
    _, out_h, out_w = output_spec.shape
    (stride_h, stride_w), (pad_h, pad_w) = layer.stride, layer.padding

    taps_reach = 255 * int(np.abs(layer.codes.astype(np.int64)).reshape(out_channels, -1).sum(axis=1).max())
    dtype = np.float32 if taps_reach < FLOAT32_EXACT else np.float64

    if pad_h or pad_w:
        x = np.pad(x, ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)), constant_values=input_quant.zero_point)
    x = x.astype(dtype)
    # Columns ordered (C, kH, kW) x (B, H_out, W_out) so that the codes reshape straight onto them per group.
    windows = np.lib.stride_tricks.sliding_window_view(x, (kernel_h, kernel_w), axis=(2, 3))
    windows = windows[:, :, : out_h * stride_h : stride_h, : out_w * stride_w : stride_w]
    columns = windows.transpose(1, 4, 5, 0, 2, 3).reshape(groups, group_channels * kernel_h * kernel_w, -1)
    weights = layer.codes.astype(dtype).reshape(groups, out_channels // groups, -1)
    accumulator = np.matmul(weights, columns).reshape(out_channels, -1).astype(np.int64)
    accumulator += layer.bias.astype(np.int64)[:, None]

    bounds = activation_range(layer.activation, output_spec.quant)
    q = _requantize(
        accumulator,
        layer.multiplier.astype(np.int64)[:, None],
        layer.shift[:, None],
        output_spec.quant.zero_point,
        bounds,
    )
    return np.ascontiguousarray(q.reshape(out_channels, batch, out_h, out_w).transpose(1, 0, 2, 3))


def _add(layer: Add, model: Model, sources: list[np.ndarray]) -> np.ndarray:
    total = np.zeros(sources[0].shape, dtype=np.int64)
    for name, q, multiplier in zip(layer.inputs, sources, layer.multipliers, strict=True):
        total += (q.astype(np.int64) - model.tensors[name].quant.zero_point) * multiplier
    output_quant = model.tensors[layer.output].quant
    return _requantize(total, 1, layer.shift, output_quant.zero_point, activation_range(layer.activation, output_quant))


def _concat(layer: Concat, model: Model, sources: list[np.ndarray]) -> np.ndarray:
    output_quant = model.tensors[layer.output].quant
    parts = []
    for name, q, multiplier, shift in zip(layer.inputs, sources, layer.multipliers, layer.shifts, strict=True):
        centred = q.astype(np.int64) - model.tensors[name].quant.zero_point
        parts.append(_requantize(centred, multiplier, shift, output_quant.zero_point, (0, 255)))
    return np.concatenate(parts, axis=1)


def _upsample(layer: Upsample, model: Model, sources: list[np.ndarray]) -> np.ndarray:
    return sources[0].repeat(layer.factor, axis=2).repeat(layer.factor, axis=3)


def _maxpool(layer: MaxPool2d, model: Model, sources: list[np.ndarray]) -> np.ndarray:
    (kernel_h, kernel_w), (stride_h, stride_w), (pad_h, pad_w) = layer.kernel, layer.stride, layer.padding
    _, out_h, out_w = model.tensors[layer.output].shape
    # 0 is the smallest code, and every window keeps at least one real element, so padding never wins.
    x = np.pad(sources[0], ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)), constant_values=0)
    windows = np.lib.stride_tricks.sliding_window_view(x, (kernel_h, kernel_w), axis=(2, 3))
    windows = windows[:, :, : out_h * stride_h : stride_h, : out_w * stride_w : stride_w]
    return windows.max(axis=(4, 5))


_EXECUTORS = {
    Conv2d: _conv,
    Add: _add,
    Concat: _concat,
    Upsample: _upsample,
    MaxPool2d: _maxpool,
}
