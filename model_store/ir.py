"""The integer IR: what a compressed model is once it leaves torch, in numpy only.

A model is a list of layers in execution order over named uint8 tensors. Every tensor is quantized per
tensor (real = scale · (q - zero_point)); weights are int8 codes of a codebook with a float32 scale alpha per
output channel (real weight = alpha · code); biases are int32 in the accumulator's units with the input zero
point already folded in; each convolution requantizes its int32 accumulator with an integer multiplier and a
right shift per output channel. `model_store.reference` executes this contract and is its definition.

Multipliers and shifts are never chosen by hand: `derive_requantization` computes them from the tensor scales
and alpha with `model_store.requant.quantize_multiplier`, so the lowering, the package and every runtime agree,
and the serialized model stores only the scales. `Model.validate` refuses a model whose stored multipliers
differ from the derived ones.
"""

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from model_store.requant import multiplier_at_shift, quantize_multiplier

IR_VERSION = 1


class Codebook(StrEnum):
    """The weight codes a layer may use: subsets of int8, each with its own bit width when packed."""

    BINARY = "binary"  # {-1, +1}
    TERNARY = "ternary"  # {-1, 0, +1}
    POW2_2 = "pow2-2"  # {0, ±1, ±2}
    POW2_4 = "pow2-4"  # {0, ±1, ±2, ±4}: the paper's "3 bits"
    INT8 = "int8"  # [-127, 127]

    @property
    def levels(self) -> np.ndarray:
        return CODEBOOK_LEVELS[self]

    @property
    def bits(self) -> int:
        """Bits per nonzero-or-zero code when bit-packed (zeros may be run-length coded instead)."""
        return CODEBOOK_BITS[self]


CODEBOOK_LEVELS: dict[Codebook, np.ndarray] = {
    Codebook.BINARY: np.array([-1, 1], dtype=np.int8),
    Codebook.TERNARY: np.array([-1, 0, 1], dtype=np.int8),
    Codebook.POW2_2: np.array([-2, -1, 0, 1, 2], dtype=np.int8),
    Codebook.POW2_4: np.array([-4, -2, -1, 0, 1, 2, 4], dtype=np.int8),
    Codebook.INT8: np.arange(-127, 128, dtype=np.int8),
}
CODEBOOK_BITS: dict[Codebook, int] = {
    Codebook.BINARY: 1,
    Codebook.TERNARY: 2,
    Codebook.POW2_2: 3,
    Codebook.POW2_4: 3,
    Codebook.INT8: 8,
}


class Activation(StrEnum):
    """The clamp fused into a layer's requantization."""

    NONE = "none"
    RELU = "relu"
    RELU6 = "relu6"


@dataclass(frozen=True)
class Quant:
    """Per-tensor uint8 quantization: real = scale · (q - zero_point)."""

    scale: float
    zero_point: int = 0

    def __post_init__(self):
        if isinstance(self.scale, bool) or not isinstance(self.scale, int | float | np.integer | np.floating):
            raise ValueError(f"a tensor scale is a number, got {self.scale!r}")
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"a tensor scale must be positive and finite, got {self.scale}")
        if isinstance(self.zero_point, bool) or not isinstance(self.zero_point, int | np.integer):
            raise ValueError(f"a zero point is an integer, got {self.zero_point!r}")
        if not 0 <= self.zero_point <= 255:
            raise ValueError(f"a uint8 zero point lies in [0, 255], got {self.zero_point}")
        # Plain Python numbers: the scale enters the multipliers as a float64 and the package header as JSON.
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "zero_point", int(self.zero_point))


@dataclass(frozen=True)
class TensorSpec:
    """A named activation tensor: its shape without the batch axis, (C, H, W), and its quantization."""

    name: str
    shape: tuple[int, ...]
    quant: Quant


@dataclass
class Conv2d:
    """Convolution (regular or grouped/depthwise) + bias + requantization + fused clamp.

    acc[o] = bias[o] + sum(q_in · code[o])    (int32 over the uint8 input codes; padding holds zp_in, i.e. real 0)
    q_out[o] = clamp(zp_out + round_half_away(acc[o] · multiplier[o] / 2**shift[o]))
    The input zero point is folded into the bias, bias[o] = round(b[o] / (s_in · alpha[o])) - zp_in · sum(code[o]),
    so the MACs stay uint8 * code; multiplier[o] / 2**shift[o] ~= s_in · alpha[o] / s_out (`conv_requantization`);
    the clamp is `activation_range`: [0, 255], [zp_out, 255] after ReLU, [zp_out, zp_out + round(6 / s_out)] after
    ReLU6.
    """

    name: str
    input: str
    output: str
    codes: np.ndarray  # int8, (O, I // groups, kH, kW)
    codebook: Codebook
    weight_scale: np.ndarray  # float32 alpha per output channel, (O,)
    bias: np.ndarray  # int32, (O,), in units of s_in · alpha[o]
    multiplier: np.ndarray | None = None  # int32, (O,), in [2**30, 2**31); None until derive_requantization
    shift: np.ndarray | None = None  # int32, (O,), right shift applied after the multiply, 0..62
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    activation: Activation = Activation.NONE

    kind = "conv2d"


@dataclass
class Add:
    """Elementwise sum of two tensors with their own scales, requantized to the output's.

    q_out = clamp(zp_out + round_half_away(((q_a - zp_a) · m_a + (q_b - zp_b) · m_b) / 2**shift))
    with m_a / 2**shift ~= s_a / s_out and m_b / 2**shift ~= s_b / s_out sharing one shift (`add_requantization`).
    """

    name: str
    inputs: tuple[str, str]
    output: str
    multipliers: tuple[int, int] | None = None  # None until derive_requantization
    shift: int | None = None
    activation: Activation = Activation.NONE

    kind = "add"


@dataclass
class Concat:
    """Channel concatenation; each input is requantized to the output's scale first (multiplier, shift each).

    q_out = clamp_0_255(zp_out + round_half_away((q_i - zp_i) · m_i / 2**shift_i)) with m_i / 2**shift_i ~= s_i / s_out;
    an input with the output's quantization passes unchanged (m = 2**30, shift = 30).
    """

    name: str
    inputs: tuple[str, ...]
    output: str
    multipliers: tuple[int, ...] | None = None  # None until derive_requantization
    shifts: tuple[int, ...] | None = None

    kind = "concat"


@dataclass
class Upsample:
    """Nearest-neighbour upsampling by an integer factor; the output keeps the input's quantization."""

    name: str
    input: str
    output: str
    factor: int = 2

    kind = "upsample"


@dataclass
class MaxPool2d:
    """Max pooling on the codes (monotone, so no requantization); output keeps the input's quantization.

    Padding (at most half the kernel, as in torch) never wins the max: every window keeps one real code.
    """

    name: str
    input: str
    output: str
    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int] = (0, 0)

    kind = "maxpool2d"


Layer = Conv2d | Add | Concat | Upsample | MaxPool2d
LAYER_TYPES = (Conv2d, Add, Concat, Upsample, MaxPool2d)
# Static int32 accumulator guarantee checked by validate: |bias| + 255 · sum|code| stays below this.
ACCUMULATOR_LIMIT = 2**31


@dataclass
class Model:
    """An integer model: inputs, layers in execution order, outputs, and every tensor's spec.

    `metadata` carries what the IR itself does not need to run: labels, the input normalization, the
    compression summary. Outputs are returned as uint8 codes; `dequantize` turns them into floats.
    """

    inputs: list[str]
    outputs: list[str]
    tensors: dict[str, TensorSpec]
    layers: list[Layer]
    metadata: dict = field(default_factory=dict)
    version: int = IR_VERSION

    def validate(self) -> None:
        """Raise ValueError naming the layer or tensor at fault if this is not a runnable integer model.

        Checks names (known, written once, defined before use), dtypes, shapes and codebook membership of the
        weights, shape agreement of every layer with its input and output specs, the int32 accumulator bound,
        that every requantization scale has a multiplier and shift, and that any stored multipliers equal the
        ones `derive_requantization` computes.
        """
        if self.version != IR_VERSION:
            raise ValueError(f"IR version {self.version} is not the supported version {IR_VERSION}")
        if not isinstance(self.metadata, dict):
            raise ValueError(f"model metadata is a dict, got {type(self.metadata).__name__}")
        for key, spec in self.tensors.items():
            _check_tensor_spec(key, spec)
        defined = set()
        if not self.inputs:
            raise ValueError("a model needs at least one input")
        for name in self.inputs:
            if name not in self.tensors:
                raise ValueError(f"model input {name!r} has no tensor spec")
            if name in defined:
                raise ValueError(f"model input {name!r} is listed twice")
            defined.add(name)
        layer_names = set()
        for layer in self.layers:
            if not isinstance(layer, LAYER_TYPES):
                raise ValueError(f"{layer!r} is not an IR layer")
            if layer.name in layer_names:
                raise ValueError(f"layer name {layer.name!r} is used twice")
            layer_names.add(layer.name)
            sources = layer_inputs(layer)
            for name in sources:
                if name not in self.tensors:
                    raise ValueError(f"layer {layer.name!r}: input tensor {name!r} is unknown")
                if name not in defined:
                    raise ValueError(f"layer {layer.name!r}: input tensor {name!r} is read before any layer writes it")
            if not isinstance(layer.output, str) or layer.output not in self.tensors:
                raise ValueError(f"layer {layer.name!r}: output tensor {layer.output!r} is unknown")
            if layer.output in defined:
                raise ValueError(f"layer {layer.name!r}: tensor {layer.output!r} is written twice")
            _LAYER_CHECKS[type(layer)](layer, [self.tensors[name] for name in sources], self.tensors[layer.output])
            defined.add(layer.output)
        if not self.outputs:
            raise ValueError("a model needs at least one output")
        if len(set(self.outputs)) != len(self.outputs):
            raise ValueError(f"model outputs {self.outputs} list a tensor twice")
        for name in self.outputs:
            if name not in defined:
                raise ValueError(f"model output {name!r} is never written")
        orphans = set(self.tensors) - defined
        if orphans:
            raise ValueError(f"tensors {sorted(orphans)} are specified but neither inputs nor written by a layer")


def layer_inputs(layer: Layer) -> tuple[str, ...]:
    """The names of the tensors a layer reads, in order."""
    if isinstance(layer, Add | Concat):
        if not isinstance(layer.inputs, tuple | list) or not all(isinstance(name, str) for name in layer.inputs):
            raise ValueError(f"layer {layer.name!r}: inputs must be a tuple of tensor names, got {layer.inputs!r}")
        return tuple(layer.inputs)
    if not isinstance(layer.input, str):
        raise ValueError(f"layer {layer.name!r}: input must be a tensor name, got {layer.input!r}")
    return (layer.input,)


def activation_range(activation: Activation, quant: Quant) -> tuple[int, int]:
    """The uint8 codes a fused clamp keeps: [0, 255], [zp, 255] after ReLU, [zp, zp + round(6 / s)] after ReLU6.

    round(6 / s) rounds half away from zero and the top is capped at 255.
    """
    if activation is Activation.NONE:
        return 0, 255
    if activation is Activation.RELU:
        return quant.zero_point, 255
    if activation is Activation.RELU6:
        return quant.zero_point, min(255, quant.zero_point + multiplier_at_shift(6.0 / quant.scale, 0))
    raise ValueError(f"unknown activation {activation!r}")


def conv_requantization(
    input_quant: Quant, weight_scale: np.ndarray, output_quant: Quant
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (multiplier, shift) int32 arrays for s_in · alpha / s_out, computed in float64 in that order."""
    real = input_quant.scale * np.asarray(weight_scale, dtype=np.float64) / output_quant.scale
    return quantize_multiplier(real)


def add_requantization(quant_a: Quant, quant_b: Quant, output_quant: Quant) -> tuple[tuple[int, int], int]:
    """((m_a, m_b), shift) for s_a / s_out and s_b / s_out sharing the shift of the larger ratio.

    The larger ratio gets a full 31-bit multiplier; the smaller one is round_half_away(ratio · 2**shift), exact.
    """
    ratios = (quant_a.scale / output_quant.scale, quant_b.scale / output_quant.scale)
    _, shift = quantize_multiplier(max(ratios))
    shift = int(shift)
    multipliers = (multiplier_at_shift(ratios[0], shift), multiplier_at_shift(ratios[1], shift))
    if min(multipliers) == 0:
        raise ValueError(f"the input scales of an add differ by more than 2**31: {quant_a.scale}, {quant_b.scale}")
    return multipliers, shift


def concat_requantization(input_quants: list[Quant], output_quant: Quant) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(multipliers, shifts), one pair per input, for s_i / s_out."""
    multipliers, shifts = quantize_multiplier([quant.scale / output_quant.scale for quant in input_quants])
    return tuple(int(m) for m in multipliers), tuple(int(s) for s in shifts)


def derive_requantization(model: Model) -> Model:
    """Fill every layer's multipliers and shifts from the tensor scales and alpha; returns the same model.

    The stored model (`model_store.serialization`) carries only the scales; this is the one place the integer
    multipliers come from, for the lowering, the loader and every runtime alike.
    """
    for layer in model.layers:
        try:
            sources = [model.tensors[name].quant for name in layer_inputs(layer)]
            output = model.tensors[layer.output].quant
        except (KeyError, TypeError) as error:
            raise ValueError(f"layer {layer.name!r} reads or writes an unknown tensor: {error}") from None
        try:
            if isinstance(layer, Conv2d):
                layer.multiplier, layer.shift = conv_requantization(sources[0], layer.weight_scale, output)
            elif isinstance(layer, Add):
                layer.multipliers, layer.shift = add_requantization(*sources, output)
            elif isinstance(layer, Concat):
                layer.multipliers, layer.shifts = concat_requantization(sources, output)
        except (ValueError, TypeError) as error:
            raise ValueError(f"layer {layer.name!r}: {error}") from None
    return model


def conv_output_hw(
    height: int, width: int, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> tuple[int, int]:
    """Output height and width of a convolution or pooling window sweep (floor mode, as torch)."""
    return (
        (height + 2 * padding[0] - kernel[0]) // stride[0] + 1,
        (width + 2 * padding[1] - kernel[1]) // stride[1] + 1,
    )


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _check_tensor_spec(key: str, spec: TensorSpec) -> None:
    if not isinstance(spec, TensorSpec) or spec.name != key:
        raise ValueError(f"tensor {key!r}: its entry must be a TensorSpec of the same name, got {spec!r}")
    shape = spec.shape
    if not isinstance(shape, tuple) or len(shape) != 3 or not all(_is_int(n) and n > 0 for n in shape):
        raise ValueError(f"tensor {key!r}: shape must be a tuple of three positive ints (C, H, W), got {shape!r}")
    if not isinstance(spec.quant, Quant):
        raise ValueError(f"tensor {key!r}: quant must be a Quant, got {spec.quant!r}")


def _pair(layer: Layer, what: str, value, minimum: int) -> tuple[int, int]:
    if not isinstance(value, tuple | list) or len(value) != 2 or not all(_is_int(v) and v >= minimum for v in value):
        raise ValueError(f"layer {layer.name!r}: {what} must be two ints >= {minimum}, got {value!r}")
    return int(value[0]), int(value[1])


def _check_array(layer: Layer, what: str, array, dtype, shape: tuple[int, ...] | None = None) -> None:
    if not isinstance(array, np.ndarray) or array.dtype != dtype:
        found = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"layer {layer.name!r}: {what} must be a {np.dtype(dtype)} array, got {found}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"layer {layer.name!r}: {what} must have shape {shape}, got {array.shape}")


def _check_output_shape(layer: Layer, output: TensorSpec, expected: tuple[int, ...]) -> None:
    if output.shape != expected:
        raise ValueError(
            f"layer {layer.name!r}: output {output.name!r} has shape {output.shape} but the layer computes {expected}"
        )


def _check_same_quant(layer: Layer, source: TensorSpec, output: TensorSpec) -> None:
    if output.quant != source.quant:
        raise ValueError(
            f"layer {layer.name!r}: output {output.name!r} must keep the input's quantization {source.quant}, "
            f"got {output.quant}"
        )


def _check_activation(layer: Layer) -> None:
    if not isinstance(layer.activation, Activation):
        raise ValueError(f"layer {layer.name!r}: activation must be an Activation, got {layer.activation!r}")


def _derived(layer: Layer, requantization, *scales):
    """The layer's multipliers from its scales; a scale no multiplier and shift can represent names the layer."""
    try:
        return requantization(*scales)
    except ValueError as error:
        raise ValueError(f"layer {layer.name!r}: {error}") from None


def _check_conv(layer: Conv2d, sources: list[TensorSpec], output: TensorSpec) -> None:
    _check_array(layer, "codes", layer.codes, np.int8)
    if layer.codes.ndim != 4 or 0 in layer.codes.shape:
        raise ValueError(f"layer {layer.name!r}: codes must be a non-empty (O, I/groups, kH, kW) array")
    out_channels, group_channels, *kernel = layer.codes.shape
    if not isinstance(layer.codebook, Codebook):
        raise ValueError(f"layer {layer.name!r}: codebook must be a Codebook, got {layer.codebook!r}")
    foreign = ~np.isin(layer.codes, layer.codebook.levels)
    if foreign.any():
        raise ValueError(
            f"layer {layer.name!r}: code {int(layer.codes[foreign][0])} is not a level of the "
            f"{layer.codebook.value} codebook ({np.count_nonzero(foreign)} such codes)"
        )
    _check_array(layer, "weight_scale", layer.weight_scale, np.float32, (out_channels,))
    if not np.all(np.isfinite(layer.weight_scale) & (layer.weight_scale > 0)):
        raise ValueError(f"layer {layer.name!r}: weight_scale (alpha) must be positive and finite per channel")
    _check_array(layer, "bias", layer.bias, np.int32, (out_channels,))
    stride = _pair(layer, "stride", layer.stride, 1)
    padding = _pair(layer, "padding", layer.padding, 0)
    if not _is_int(layer.groups) or layer.groups < 1:
        raise ValueError(f"layer {layer.name!r}: groups must be a positive int, got {layer.groups!r}")
    _check_activation(layer)
    in_channels, height, width = sources[0].shape
    if group_channels * layer.groups != in_channels or out_channels % layer.groups:
        raise ValueError(
            f"layer {layer.name!r}: codes {layer.codes.shape} with groups={layer.groups} need "
            f"{group_channels * layer.groups} input channels and O divisible by groups; input "
            f"{sources[0].name!r} has {in_channels} channels"
        )
    out_height, out_width = conv_output_hw(height, width, tuple(kernel), stride, padding)
    if out_height < 1 or out_width < 1:
        raise ValueError(f"layer {layer.name!r}: kernel {tuple(kernel)} is larger than the padded input")
    _check_output_shape(layer, output, (out_channels, out_height, out_width))
    reach = 255 * np.abs(layer.codes.astype(np.int64)).reshape(out_channels, -1).sum(axis=1)
    reach += np.abs(layer.bias.astype(np.int64))
    if reach.max() >= ACCUMULATOR_LIMIT:
        raise ValueError(f"layer {layer.name!r}: channel {int(reach.argmax())} can overflow the int32 accumulator")
    multiplier, shift = _derived(layer, conv_requantization, sources[0].quant, layer.weight_scale, output.quant)
    if layer.multiplier is not None or layer.shift is not None:
        for what, stored, derived in (("multiplier", layer.multiplier, multiplier), ("shift", layer.shift, shift)):
            _check_array(layer, what, stored, np.int32, (out_channels,))
            if not np.array_equal(stored, derived):
                raise ValueError(f"layer {layer.name!r}: stored {what} differs from the one the scales give")


def _check_add(layer: Add, sources: list[TensorSpec], output: TensorSpec) -> None:
    if len(sources) != 2:
        raise ValueError(f"layer {layer.name!r}: an add reads exactly two tensors, got {len(sources)}")
    if sources[0].shape != sources[1].shape:
        raise ValueError(f"layer {layer.name!r}: inputs have shapes {sources[0].shape} and {sources[1].shape}")
    _check_activation(layer)
    _check_output_shape(layer, output, sources[0].shape)
    derived = _derived(layer, add_requantization, sources[0].quant, sources[1].quant, output.quant)
    stored = layer.multipliers is not None or layer.shift is not None
    if stored and (tuple(layer.multipliers or ()), layer.shift) != derived:
        raise ValueError(f"layer {layer.name!r}: stored multipliers/shift differ from the ones the scales give")


def _check_concat(layer: Concat, sources: list[TensorSpec], output: TensorSpec) -> None:
    if not sources:
        raise ValueError(f"layer {layer.name!r}: a concat reads at least one tensor")
    if len({spec.shape[1:] for spec in sources}) != 1:
        raise ValueError(f"layer {layer.name!r}: inputs differ in height/width: {[s.shape for s in sources]}")
    _check_output_shape(layer, output, (sum(spec.shape[0] for spec in sources), *sources[0].shape[1:]))
    derived = _derived(layer, concat_requantization, [spec.quant for spec in sources], output.quant)
    stored = layer.multipliers is not None or layer.shifts is not None
    if stored and (tuple(layer.multipliers or ()), tuple(layer.shifts or ())) != derived:
        raise ValueError(f"layer {layer.name!r}: stored multipliers/shifts differ from the ones the scales give")


def _check_upsample(layer: Upsample, sources: list[TensorSpec], output: TensorSpec) -> None:
    if not _is_int(layer.factor) or layer.factor < 1:
        raise ValueError(f"layer {layer.name!r}: factor must be a positive int, got {layer.factor!r}")
    channels, height, width = sources[0].shape
    _check_output_shape(layer, output, (channels, height * layer.factor, width * layer.factor))
    _check_same_quant(layer, sources[0], output)


def _check_maxpool(layer: MaxPool2d, sources: list[TensorSpec], output: TensorSpec) -> None:
    kernel = _pair(layer, "kernel", layer.kernel, 1)
    stride = _pair(layer, "stride", layer.stride, 1)
    padding = _pair(layer, "padding", layer.padding, 0)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"layer {layer.name!r}: padding {padding} exceeds half the kernel {kernel}")
    channels, height, width = sources[0].shape
    out_height, out_width = conv_output_hw(height, width, kernel, stride, padding)
    if out_height < 1 or out_width < 1:
        raise ValueError(f"layer {layer.name!r}: kernel {kernel} is larger than the padded input")
    _check_output_shape(layer, output, (channels, out_height, out_width))
    _check_same_quant(layer, sources[0], output)


_LAYER_CHECKS = {
    Conv2d: _check_conv,
    Add: _check_add,
    Concat: _check_concat,
    Upsample: _check_upsample,
    MaxPool2d: _check_maxpool,
}
