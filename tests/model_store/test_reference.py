from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_store.ir import (
    Activation,
    Add,
    Codebook,
    Concat,
    Conv2d,
    MaxPool2d,
    Model,
    Quant,
    TensorSpec,
    Upsample,
    derive_requantization,
)
from model_store.reference import dequantize, run
from tests.model_store.synthetic import small_model

# Brute-force integer semantics, written from the IR docstrings with Python ints, independent of the executor.


def round_half_away(value: Fraction) -> int:
    magnitude = abs(value)
    rounded = (2 * magnitude.numerator + magnitude.denominator) // (2 * magnitude.denominator)
    return rounded if value >= 0 else -rounded


def clamp_bounds(activation: Activation, quant: Quant) -> tuple[int, int]:
    if activation is Activation.RELU:
        return quant.zero_point, 255
    if activation is Activation.RELU6:
        return quant.zero_point, min(255, quant.zero_point + round_half_away(Fraction(6.0 / quant.scale)))
    return 0, 255


def requantize(accumulator: int, multiplier: int, shift: int, zero_point: int, bounds: tuple[int, int]) -> int:
    return min(max(zero_point + round_half_away(Fraction(accumulator * multiplier, 2**shift)), bounds[0]), bounds[1])


def brute_conv(layer: Conv2d, x: np.ndarray, in_quant: Quant, out_spec: TensorSpec) -> np.ndarray:
    batch, _, height, width = x.shape
    out_channels, group_channels, kernel_h, kernel_w = layer.codes.shape
    per_group = out_channels // layer.groups
    bounds = clamp_bounds(layer.activation, out_spec.quant)
    out = np.zeros((batch, *out_spec.shape), dtype=np.uint8)
    for b, o, y, x_out in np.ndindex(out.shape):
        accumulator = int(layer.bias[o])
        for c in range(group_channels):
            channel = (o // per_group) * group_channels + c
            for ky in range(kernel_h):
                for kx in range(kernel_w):
                    row = y * layer.stride[0] + ky - layer.padding[0]
                    col = x_out * layer.stride[1] + kx - layer.padding[1]
                    inside = 0 <= row < height and 0 <= col < width
                    q = int(x[b, channel, row, col]) if inside else in_quant.zero_point
                    accumulator += q * int(layer.codes[o, c, ky, kx])
        assert -(2**31) <= accumulator < 2**31
        out[b, o, y, x_out] = requantize(
            accumulator, int(layer.multiplier[o]), int(layer.shift[o]), out_spec.quant.zero_point, bounds
        )
    return out


def brute_add(layer: Add, a: np.ndarray, b: np.ndarray, quants: list[Quant], out_quant: Quant) -> np.ndarray:
    bounds = clamp_bounds(layer.activation, out_quant)
    out = np.zeros(a.shape, dtype=np.uint8)
    for index in np.ndindex(a.shape):
        total = (int(a[index]) - quants[0].zero_point) * layer.multipliers[0]
        total += (int(b[index]) - quants[1].zero_point) * layer.multipliers[1]
        out[index] = requantize(total, 1, layer.shift, out_quant.zero_point, bounds)
    return out


def brute_concat(layer: Concat, sources: list[np.ndarray], quants: list[Quant], out_quant: Quant) -> np.ndarray:
    parts = []
    for source, quant, multiplier, shift in zip(sources, quants, layer.multipliers, layer.shifts, strict=True):
        part = np.zeros(source.shape, dtype=np.uint8)
        for index in np.ndindex(source.shape):
            part[index] = requantize(
                int(source[index]) - quant.zero_point, multiplier, shift, out_quant.zero_point, (0, 255)
            )
        parts.append(part)
    return np.concatenate(parts, axis=1)


def brute_upsample(layer: Upsample, x: np.ndarray) -> np.ndarray:
    batch, channels, height, width = x.shape
    out = np.zeros((batch, channels, height * layer.factor, width * layer.factor), dtype=np.uint8)
    for b, c, y, x_out in np.ndindex(out.shape):
        out[b, c, y, x_out] = x[b, c, y // layer.factor, x_out // layer.factor]
    return out


def brute_maxpool(layer: MaxPool2d, x: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
    batch, _, height, width = x.shape
    out = np.zeros((batch, *out_shape), dtype=np.uint8)
    for b, c, y, x_out in np.ndindex(out.shape):
        top, left = y * layer.stride[0] - layer.padding[0], x_out * layer.stride[1] - layer.padding[1]
        window = [
            int(x[b, c, row, col])
            for row in range(top, top + layer.kernel[0])
            for col in range(left, left + layer.kernel[1])
            if 0 <= row < height and 0 <= col < width
        ]
        out[b, c, y, x_out] = max(window)
    return out


def brute_layer(model: Model, layer, tensors: dict[str, np.ndarray]) -> np.ndarray:
    spec = model.tensors
    if isinstance(layer, Conv2d):
        return brute_conv(layer, tensors[layer.input], spec[layer.input].quant, spec[layer.output])
    if isinstance(layer, Add):
        a, b = (tensors[name] for name in layer.inputs)
        return brute_add(layer, a, b, [spec[name].quant for name in layer.inputs], spec[layer.output].quant)
    if isinstance(layer, Concat):
        sources = [tensors[name] for name in layer.inputs]
        return brute_concat(layer, sources, [spec[name].quant for name in layer.inputs], spec[layer.output].quant)
    if isinstance(layer, Upsample):
        return brute_upsample(layer, tensors[layer.input])
    return brute_maxpool(layer, tensors[layer.input], spec[layer.output].shape)


def random_image(rng: np.random.Generator, model: Model, batch: int = 2) -> np.ndarray:
    return rng.integers(0, 256, (batch, *model.tensors[model.inputs[0]].shape), dtype=np.uint8)


@pytest.mark.parametrize("codebook", list(Codebook))
def test_every_layer_matches_the_brute_force_integer_semantics(codebook):
    rng = np.random.default_rng(11)
    model = small_model(rng, codebook)
    tensors = run(model, random_image(rng, model), keep_intermediates=True)
    for layer in model.layers:
        expected = brute_layer(model, layer, tensors)
        assert tensors[layer.output].dtype == np.uint8
        assert np.array_equal(tensors[layer.output], expected), f"layer {layer.name} differs"


UNIT = Quant(1.0)


def conv_model(
    rng,
    in_shape,
    codes,
    codebook=Codebook.INT8,
    stride=(1, 1),
    padding=(0, 0),
    groups=1,
    activation=Activation.NONE,
    in_quant=UNIT,
    out_quant=UNIT,
) -> Model:
    out_channels = codes.shape[0]
    out_h = (in_shape[1] + 2 * padding[0] - codes.shape[2]) // stride[0] + 1
    out_w = (in_shape[2] + 2 * padding[1] - codes.shape[3]) // stride[1] + 1
    tensors = {
        "x": TensorSpec("x", in_shape, in_quant),
        "y": TensorSpec("y", (out_channels, out_h, out_w), out_quant),
    }
    alpha = rng.uniform(0.002, 0.02, out_channels).astype(np.float32)
    bias = rng.integers(-5000, 5000, out_channels).astype(np.int32)
    conv = Conv2d("conv", "x", "y", codes, codebook, alpha, bias, None, None, stride, padding, groups, activation)
    model = Model(["x"], ["y"], tensors, [conv])
    derive_requantization(model)
    model.validate()
    return model


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    groups=st.sampled_from([1, 2, 4]),
    per_group_out=st.integers(1, 2),
    kernel=st.sampled_from([(1, 1), (3, 3), (2, 3), (3, 1)]),
    stride=st.sampled_from([(1, 1), (2, 2), (1, 2)]),
    padding=st.sampled_from([(0, 0), (1, 1), (0, 1)]),
    activation=st.sampled_from(list(Activation)),
    in_zero_point=st.integers(0, 255),
    out_zero_point=st.integers(0, 255),
)
def test_conv_matches_brute_force_over_shapes_groups_and_clamps(
    seed, groups, per_group_out, kernel, stride, padding, activation, in_zero_point, out_zero_point
):
    rng = np.random.default_rng(seed)
    in_shape = (4, 5, 6)
    codes = rng.integers(-127, 128, (groups * per_group_out, 4 // groups, *kernel)).astype(np.int8)
    in_quant, out_quant = Quant(0.02, in_zero_point), Quant(0.05, out_zero_point)
    model = conv_model(rng, in_shape, codes, Codebook.INT8, stride, padding, groups, activation, in_quant, out_quant)
    x = rng.integers(0, 256, (2, *in_shape), dtype=np.uint8)
    expected = brute_conv(model.layers[0], x, model.tensors["x"].quant, model.tensors["y"])
    assert np.array_equal(run(model, x)["y"], expected)


def test_relu6_clamps_at_six_in_the_output_scale():
    rng = np.random.default_rng(5)
    codes = np.full((2, 3, 1, 1), 127, dtype=np.int8)
    model = conv_model(rng, (3, 4, 4), codes, activation=Activation.RELU6, out_quant=Quant(0.1, 20))
    y = run(model, np.full((1, 3, 4, 4), 255, dtype=np.uint8))["y"]
    assert np.all(y == 20 + 60)  # 6 / 0.1 codes above the zero point


def test_depthwise_conv_treats_each_channel_alone():
    rng = np.random.default_rng(6)
    codes = np.zeros((3, 1, 3, 3), dtype=np.int8)
    codes[:, 0, 1, 1] = 1  # a centre tap: each output channel copies its own input channel
    model = conv_model(rng, (3, 5, 5), codes, Codebook.TERNARY, padding=(1, 1), groups=3)
    layer = model.layers[0]
    layer.bias = np.zeros(3, dtype=np.int32)
    layer.weight_scale = np.ones(3, dtype=np.float32)
    derive_requantization(model)
    x = rng.integers(0, 256, (2, 3, 5, 5), dtype=np.uint8)
    assert np.array_equal(run(model, x)["y"], x)


def test_large_int8_accumulations_stay_exact():
    # 64 channels x 3 x 3 taps of codes near 127 on pixels of 255 sum to an odd number above 2**24, which float32
    # cannot hold; the bias brings the accumulator back to a few units so every bit shows in the output.
    rng = np.random.default_rng(8)
    codes = rng.integers(120, 128, (2, 64, 3, 3)).astype(np.int8)
    codes[:, 0, 0, 0] -= (codes.astype(np.int64).sum(axis=(1, 2, 3)) + 1) % 2  # make each channel's sum odd
    model = conv_model(rng, (64, 5, 5), codes)
    layer = model.layers[0]
    sums = 255 * codes.astype(np.int64).sum(axis=(1, 2, 3))
    assert np.all(sums > 2**24) and np.all(sums % 2 == 1)
    layer.bias = (np.array([37, 90]) - sums).astype(np.int32)
    layer.weight_scale = np.ones(2, dtype=np.float32)
    derive_requantization(model)  # multiplier / 2**shift == 1: the output is the accumulator
    y = run(model, np.full((1, 64, 5, 5), 255, dtype=np.uint8))["y"]
    assert np.all(y[0, 0] == 37) and np.all(y[0, 1] == 90)


def test_conv_output_approximates_the_real_valued_convolution():
    rng = np.random.default_rng(9)
    model = small_model(rng, Codebook.INT8)
    tensors = run(model, random_image(rng, model), keep_intermediates=True)
    layer = next(layer for layer in model.layers if layer.name == "out")
    x = dequantize(model.tensors[layer.input].quant, tensors[layer.input]).astype(np.float64)
    weights = layer.codes[:, :, 0, 0].astype(np.float64) * layer.weight_scale[:, None]
    in_quant, out_quant = model.tensors[layer.input].quant, model.tensors[layer.output].quant
    bias = (layer.bias + in_quant.zero_point * layer.codes.sum(axis=(1, 2, 3))) * in_quant.scale * layer.weight_scale
    real = np.einsum("oc,bchw->bohw", weights, x) + bias[None, :, None, None]
    expected = np.clip(np.round(real / out_quant.scale) + out_quant.zero_point, 0, 255)
    assert np.abs(tensors["out"].astype(np.int64) - expected).max() <= 1


def test_dequantize_is_scale_times_offset_from_the_zero_point():
    values = dequantize(Quant(0.5, 10), np.array([0, 10, 255], dtype=np.uint8))
    assert values.dtype == np.float32
    assert values.tolist() == [-5.0, 0.0, 122.5]


def two_input_model() -> Model:
    tensors = {
        "a": TensorSpec("a", (2, 3, 3), Quant(0.1, 5)),
        "b": TensorSpec("b", (2, 3, 3), Quant(0.3, 0)),
        "sum": TensorSpec("sum", (2, 3, 3), Quant(0.25, 2)),
    }
    model = Model(["a", "b"], ["sum"], tensors, [Add("add", ("a", "b"), "sum")])
    derive_requantization(model)
    return model


def test_a_multi_input_model_takes_a_dict_and_adds_in_real_terms():
    model = two_input_model()
    a = np.full((1, 2, 3, 3), 15, dtype=np.uint8)  # real 1.0
    b = np.full((1, 2, 3, 3), 10, dtype=np.uint8)  # real 3.0
    out = run(model, {"a": a, "b": b})
    assert list(out) == ["sum"]
    assert np.all(out["sum"] == 2 + 16)  # real 4.0 at scale 0.25


def test_run_derives_missing_multipliers_first():
    model = small_model(np.random.default_rng(2))
    x = random_image(np.random.default_rng(3), model)
    expected = run(model, x)["out"]
    for layer in model.layers:
        if isinstance(layer, Conv2d):
            layer.multiplier = layer.shift = None
    assert np.array_equal(run(model, x)["out"], expected)


def test_keep_intermediates_returns_every_tensor():
    model = small_model(np.random.default_rng(2))
    tensors = run(model, random_image(np.random.default_rng(3), model, batch=3), keep_intermediates=True)
    assert set(tensors) == set(model.tensors)
    for name, spec in model.tensors.items():
        assert tensors[name].shape == (3, *spec.shape)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (np.zeros((1, 2, 3, 3), dtype=np.uint8), r"pass a dict by input name"),
        ({"a": np.zeros((1, 2, 3, 3), dtype=np.uint8)}, r"inputs must be given for exactly \['a', 'b'\]"),
        ({"a": np.zeros((1, 2, 3, 3), dtype=np.float32), "b": np.zeros((1, 2, 3, 3), dtype=np.uint8)}, "uint8"),
        ({"a": np.zeros((1, 2, 3, 4), dtype=np.uint8), "b": np.zeros((1, 2, 3, 3), dtype=np.uint8)}, r"\(B, 2, 3, 3\)"),
        ({"a": np.zeros((2, 2, 3, 3), dtype=np.uint8), "b": np.zeros((1, 2, 3, 3), dtype=np.uint8)}, "batch size"),
    ],
)
def test_run_refuses_inputs_that_do_not_fit_the_model(inputs, message):
    with pytest.raises(ValueError, match=message):
        run(two_input_model(), inputs)
