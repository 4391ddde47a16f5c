"""The integer IR: what a compressed model is once it leaves torch, in numpy only.

A model is a list of layers in execution order over named uint8 tensors. Every tensor is quantized per
tensor (real = scale · (q - zero_point)); weights are int8 codes of a codebook with a float scale alpha per
output channel (real weight = alpha · code); biases are int32 in the accumulator's units with the input zero
point already folded in; each convolution requantizes its int32 accumulator with an integer multiplier and a
right shift per output channel. `model_store.reference` executes this contract and is its definition.
"""

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

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
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"a tensor scale must be positive and finite, got {self.scale}")
        if not 0 <= self.zero_point <= 255:
            raise ValueError(f"a uint8 zero point lies in [0, 255], got {self.zero_point}")


@dataclass(frozen=True)
class TensorSpec:
    """A named activation tensor: its shape without the batch axis, (C, H, W), and its quantization."""

    name: str
    shape: tuple[int, ...]
    quant: Quant


@dataclass
class Conv2d:
    """Convolution (regular or grouped/depthwise) + bias + requantization + fused clamp.

    acc[o] = bias[o] + Σ (q_in - zp_in) · code    (int32; bias holds the zp fold: -zp_in · Σ code)
    q_out[o] = clamp(zp_out + round_half_away(acc[o] · multiplier[o] / 2**shift[o]))
    where the clamp is [0, 255], or [zp_out, 255] after ReLU, or [zp_out, zp_out + round(6 / s_out)] after ReLU6.
    """

    name: str
    input: str
    output: str
    codes: np.ndarray  # int8, (O, I // groups, kH, kW)
    codebook: Codebook
    weight_scale: np.ndarray  # float32 alpha per output channel, (O,)
    bias: np.ndarray  # int32, (O,), in units of s_in · alpha[o]
    multiplier: np.ndarray  # int32, (O,), in [0, 2**31)
    shift: np.ndarray  # int32, (O,), right shift applied after the multiply, 0..62
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    activation: Activation = Activation.NONE

    kind = "conv2d"


@dataclass
class Add:
    """Elementwise sum of two tensors with their own scales, requantized to the output's.

    q_out = clamp(zp_out + round_half_away(((q_a - zp_a) · m_a + (q_b - zp_b) · m_b) / 2**shift))
    """

    name: str
    inputs: tuple[str, str]
    output: str
    multipliers: tuple[int, int]
    shift: int
    activation: Activation = Activation.NONE

    kind = "add"


@dataclass
class Concat:
    """Channel concatenation; each input is requantized to the output's scale first (multiplier, shift each)."""

    name: str
    inputs: tuple[str, ...]
    output: str
    multipliers: tuple[int, ...]
    shifts: tuple[int, ...]

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
    """Max pooling on the codes (monotone, so no requantization); output keeps the input's quantization."""

    name: str
    input: str
    output: str
    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int] = (0, 0)

    kind = "maxpool2d"


Layer = Conv2d | Add | Concat | Upsample | MaxPool2d


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
