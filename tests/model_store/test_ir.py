import dataclasses

import numpy as np
import pytest

from model_store.ir import (
    Activation,
    Add,
    Codebook,
    Concat,
    Conv2d,
    MaxPool2d,
    Quant,
    TensorSpec,
    Upsample,
    activation_range,
    add_requantization,
    derive_requantization,
)
from model_store.requant import quantize_multiplier
from tests.model_store.synthetic import small_model


@pytest.fixture
def model():
    return small_model(np.random.default_rng(3))


def layer(model, name):
    return next(layer for layer in model.layers if layer.name == name)


def respec(model, name, **changes):
    model.tensors[name] = dataclasses.replace(model.tensors[name], **changes)


def test_the_small_model_is_valid_for_every_codebook():
    for codebook in Codebook:
        small_model(np.random.default_rng(0), codebook).validate()


def test_validate_names_an_unknown_input_tensor(model):
    layer(model, "head").input = "nowhere"
    with pytest.raises(ValueError, match=r"layer 'head': input tensor 'nowhere' is unknown"):
        model.validate()


def test_validate_names_a_tensor_read_before_it_is_written(model):
    model.layers.insert(0, model.layers.pop(model.layers.index(layer(model, "head"))))
    with pytest.raises(ValueError, match=r"layer 'head': input tensor 'joined' is read before any layer writes it"):
        model.validate()


def test_validate_names_a_tensor_written_twice(model):
    layer(model, "lateral").output = "sum"
    with pytest.raises(ValueError, match=r"layer 'lateral': tensor 'sum' is written twice"):
        model.validate()


def test_validate_refuses_writing_a_model_input(model):
    layer(model, "conv").output = "image"
    with pytest.raises(ValueError, match=r"tensor 'image' is written twice"):
        model.validate()


def test_validate_names_an_unknown_output_tensor(model):
    layer(model, "out").output = "missing"
    with pytest.raises(ValueError, match=r"layer 'out': output tensor 'missing' is unknown"):
        model.validate()


def test_validate_names_a_model_output_nobody_writes(model):
    model.tensors["ghost"] = TensorSpec("ghost", (1, 1, 1), Quant(1.0))
    model.outputs.append("ghost")
    with pytest.raises(ValueError, match=r"model output 'ghost' is never written"):
        model.validate()


def test_validate_names_orphan_tensor_specs(model):
    model.tensors["ghost"] = TensorSpec("ghost", (1, 1, 1), Quant(1.0))
    with pytest.raises(ValueError, match=r"tensors \['ghost'\] are specified"):
        model.validate()


def test_validate_names_a_model_input_without_spec(model):
    model.inputs = ["camera"]
    with pytest.raises(ValueError, match=r"model input 'camera' has no tensor spec"):
        model.validate()


def test_validate_refuses_duplicate_layer_names(model):
    layer(model, "lateral").name = "conv"
    with pytest.raises(ValueError, match=r"layer name 'conv' is used twice"):
        model.validate()


def test_validate_refuses_a_spec_under_another_name(model):
    model.tensors["sum"] = dataclasses.replace(model.tensors["sum"], name="total")
    with pytest.raises(ValueError, match=r"tensor 'sum'"):
        model.validate()


def test_validate_refuses_a_non_3d_tensor_shape(model):
    respec(model, "image", shape=(3, 8))
    with pytest.raises(ValueError, match=r"tensor 'image': shape must be a tuple of three positive ints"):
        model.validate()


ALPHA_NOT_POSITIVE = r"weight_scale \(alpha\) must be positive and finite"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("codes", np.zeros((4, 3, 3, 3), dtype=np.int16), r"codes must be a int8 array, got int16"),
        ("codes", np.zeros((4, 27), dtype=np.int8), r"codes must be a non-empty \(O, I/groups, kH, kW\) array"),
        ("weight_scale", np.ones(4, dtype=np.float64), r"weight_scale must be a float32 array"),
        ("weight_scale", np.ones(5, dtype=np.float32), r"weight_scale must have shape \(4,\), got \(5,\)"),
        (
            "weight_scale",
            np.array([1, 0, 1, 1], dtype=np.float32),
            r"weight_scale \(alpha\) must be positive and finite",
        ),
        (
            "weight_scale",
            np.array([1, np.inf, 1, 1], dtype=np.float32),
            r"weight_scale \(alpha\) must be positive and finite",
        ),
        ("bias", np.zeros(4, dtype=np.int64), r"bias must be a int32 array, got int64"),
        ("bias", np.zeros((4, 1), dtype=np.int32), r"bias must have shape \(4,\)"),
        ("codebook", "pow2-4", r"codebook must be a Codebook"),
        ("activation", "relu", r"activation must be an Activation"),
        ("stride", (0, 1), r"stride must be two ints >= 1"),
        ("padding", (-1, 0), r"padding must be two ints >= 0"),
        ("groups", 0, r"groups must be a positive int"),
    ],
)
def test_validate_names_the_conv_with_a_broken_field(model, field, value, message):
    setattr(layer(model, "conv"), field, value)
    with pytest.raises(ValueError, match=r"layer 'conv': " + message):
        model.validate()


def test_validate_names_a_code_outside_the_codebook(model):
    conv = layer(model, "conv")
    conv.codes = conv.codes.copy()
    conv.codes[0, 0, 0, 0] = 3  # pow2-4 has 0, 1, 2, 4 and their negatives
    with pytest.raises(ValueError, match=r"layer 'conv': code 3 is not a level of the pow2-4 codebook \(1 such"):
        model.validate()


def test_validate_refuses_input_channels_that_do_not_match_the_codes(model):
    conv = layer(model, "conv")
    conv.codes = np.ones((4, 2, 3, 3), dtype=np.int8)
    with pytest.raises(ValueError, match=r"layer 'conv': codes \(4, 2, 3, 3\) with groups=1 need 2 input channels"):
        model.validate()


def test_validate_refuses_groups_that_do_not_divide_the_output_channels(model):
    depthwise = layer(model, "depthwise")
    depthwise.codes = np.ones((3, 1, 3, 3), dtype=np.int8)  # 4 groups of one input channel, 3 outputs
    depthwise.weight_scale, depthwise.bias = depthwise.weight_scale[:3], depthwise.bias[:3]
    with pytest.raises(ValueError, match=r"layer 'depthwise': .*O divisible by groups"):
        model.validate()


def test_validate_refuses_a_conv_output_shape_that_differs_from_what_it_computes(model):
    respec(model, "conv", shape=(4, 5, 6))
    with pytest.raises(ValueError, match=r"layer 'conv': output 'conv' has shape \(4, 5, 6\) .* computes \(4, 4, 6\)"):
        model.validate()


def test_validate_refuses_a_kernel_larger_than_the_padded_input(model):
    head = layer(model, "head")
    head.codes = np.ones((3, 8, 9, 9), dtype=np.int8)
    with pytest.raises(ValueError, match=r"layer 'head': kernel \(9, 9\) is larger than the padded input"):
        model.validate()


def test_validate_refuses_a_bias_that_can_overflow_the_int32_accumulator(model):
    conv = layer(model, "conv")
    reach = 255 * int(np.abs(conv.codes[0].astype(np.int64)).sum())
    conv.bias = conv.bias.copy()
    conv.bias[0] = 2**31 - reach  # the largest sum reaches exactly 2**31
    with pytest.raises(ValueError, match=r"layer 'conv': channel 0 can overflow the int32 accumulator"):
        model.validate()
    conv.bias[0] -= 1
    model.validate()


def test_validate_refuses_tampered_multipliers(model):
    conv = layer(model, "conv")
    conv.multiplier = conv.multiplier.copy()
    conv.multiplier[1] += 1
    with pytest.raises(ValueError, match=r"layer 'conv': stored multiplier differs"):
        model.validate()


def test_validate_refuses_tampered_add_and_concat_requantization(model):
    add = layer(model, "sum")
    add.shift += 1
    with pytest.raises(ValueError, match=r"layer 'sum': stored multipliers/shift differ"):
        model.validate()
    derive_requantization(model)
    concat = layer(model, "concat")
    concat.shifts = (concat.shifts[0], concat.shifts[1] + 1)
    with pytest.raises(ValueError, match=r"layer 'concat': stored multipliers/shifts differ"):
        model.validate()


def test_validate_accepts_a_model_whose_multipliers_are_not_derived_yet(model):
    for each in model.layers:
        if isinstance(each, Conv2d):
            each.multiplier = each.shift = None
        elif isinstance(each, Add):
            each.multipliers = each.shift = None
        elif isinstance(each, Concat):
            each.multipliers = each.shifts = None
    model.validate()


def test_validate_refuses_adding_tensors_of_different_shapes(model):
    layer(model, "sum").inputs = ("conv", "image")
    with pytest.raises(ValueError, match=r"layer 'sum': inputs have shapes \(4, 4, 6\) and \(3, 8, 12\)"):
        model.validate()


def test_validate_refuses_an_add_of_three_inputs(model):
    layer(model, "sum").inputs = ("conv", "depthwise", "conv")
    with pytest.raises(ValueError, match=r"layer 'sum': an add reads exactly two tensors"):
        model.validate()


def test_validate_refuses_concatenating_different_heights(model):
    layer(model, "concat").inputs = ("up", "pooled")
    with pytest.raises(ValueError, match=r"layer 'concat': inputs differ in height/width"):
        model.validate()


def test_validate_refuses_a_concat_output_of_the_wrong_channel_count(model):
    respec(model, "joined", shape=(7, 4, 6))
    with pytest.raises(ValueError, match=r"layer 'concat': output 'joined' has shape \(7, 4, 6\)"):
        model.validate()


def test_validate_refuses_an_upsample_that_changes_the_quantization(model):
    respec(model, "up", quant=Quant(0.5, 3))
    with pytest.raises(ValueError, match=r"layer 'upsample': output 'up' must keep the input's quantization"):
        model.validate()


def test_validate_refuses_an_upsample_output_of_the_wrong_size(model):
    layer(model, "upsample").factor = 3
    with pytest.raises(ValueError, match=r"layer 'upsample': output 'up' has shape \(4, 4, 6\) .* \(4, 6, 9\)"):
        model.validate()


def test_validate_refuses_maxpool_padding_beyond_half_the_kernel(model):
    layer(model, "pool").padding = (2, 1)
    with pytest.raises(ValueError, match=r"layer 'pool': padding \(2, 1\) exceeds half the kernel \(3, 3\)"):
        model.validate()


def test_validate_refuses_a_maxpool_that_changes_the_quantization(model):
    respec(model, "pooled", quant=Quant(0.5, 3))
    with pytest.raises(ValueError, match=r"layer 'pool': output 'pooled' must keep the input's quantization"):
        model.validate()


def test_validate_refuses_an_unsupported_ir_version(model):
    model.version = 2
    with pytest.raises(ValueError, match=r"IR version 2"):
        model.validate()


def test_validate_refuses_something_that_is_not_a_layer(model):
    model.layers.append("relu")
    with pytest.raises(ValueError, match=r"'relu' is not an IR layer"):
        model.validate()


@pytest.mark.parametrize(
    ("scale", "zero_point", "message"),
    [(0.0, 0, "positive"), (float("nan"), 0, "positive"), (True, 0, "number"), ("0.1", 0, "number"),
     (0.1, 256, "lies in"), (0.1, -1, "lies in"), (0.1, 1.5, "integer"), (0.1, True, "integer")],
)  # fmt: skip
def test_quant_refuses_bad_scales_and_zero_points(scale, zero_point, message):
    with pytest.raises(ValueError, match=message):
        Quant(scale, zero_point)


def test_quant_stores_plain_python_numbers():
    quant = Quant(np.float32(0.5), np.int64(3))
    assert type(quant.scale) is float and type(quant.zero_point) is int


def test_derive_requantization_fills_every_layer_from_the_scales(model):
    derive_requantization(model)
    conv = layer(model, "conv")
    real = model.tensors["image"].quant.scale * conv.weight_scale.astype(np.float64) / model.tensors["conv"].quant.scale
    multiplier, shift = quantize_multiplier(real)
    assert np.array_equal(conv.multiplier, multiplier) and np.array_equal(conv.shift, shift)

    add = layer(model, "sum")
    scales = [model.tensors[name].quant.scale / model.tensors["sum"].quant.scale for name in add.inputs]
    for multiplier, ratio in zip(add.multipliers, scales, strict=True):
        assert abs(multiplier / 2**add.shift - ratio) / ratio < 2**-20
    assert max(add.multipliers) >= 2**30  # the larger ratio keeps full precision

    concat = layer(model, "concat")
    for multiplier, shift, name in zip(concat.multipliers, concat.shifts, concat.inputs, strict=True):
        ratio = model.tensors[name].quant.scale / model.tensors["joined"].quant.scale
        assert (multiplier, shift) == tuple(int(v) for v in quantize_multiplier(ratio))


def test_an_input_with_the_output_quantization_passes_a_concat_unchanged(model):
    respec(model, "joined", quant=model.tensors["up"].quant)
    derive_requantization(model)
    concat = layer(model, "concat")
    assert (concat.multipliers[0], concat.shifts[0]) == (2**30, 30)


def test_add_requantization_refuses_scales_too_far_apart():
    with pytest.raises(ValueError, match="differ by more than 2\\*\\*31"):
        add_requantization(Quant(1.0), Quant(1e-12), Quant(1.0))


def test_derive_requantization_names_the_layer_with_an_unknown_tensor(model):
    layer(model, "head").input = "nowhere"
    with pytest.raises(ValueError, match=r"layer 'head' reads or writes an unknown tensor"):
        derive_requantization(model)


def test_derive_requantization_names_the_layer_whose_scale_cannot_be_represented(model):
    respec(model, "conv", quant=Quant(1e-30))
    with pytest.raises(ValueError, match=r"layer 'conv': a requantization scale must lie in"):
        derive_requantization(model)


@pytest.mark.parametrize(
    ("activation", "quant", "expected"),
    [
        (Activation.NONE, Quant(0.1, 9), (0, 255)),
        (Activation.RELU, Quant(0.1, 9), (9, 255)),
        (Activation.RELU6, Quant(6 / 200, 9), (9, 209)),
        (Activation.RELU6, Quant(12.0, 0), (0, 1)),  # round(6 / 12) rounds the tie 0.5 away from zero
        (Activation.RELU6, Quant(0.01, 9), (9, 255)),
    ],
)
def test_activation_range(activation, quant, expected):
    assert activation_range(activation, quant) == expected


def test_layers_have_the_kinds_the_package_format_names():
    assert [kind.kind for kind in (Conv2d, Add, Concat, Upsample, MaxPool2d)] == [
        "conv2d",
        "add",
        "concat",
        "upsample",
        "maxpool2d",
    ]
