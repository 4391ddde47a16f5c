import contextlib
import json
import lzma
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_store.ir import Activation, Codebook, Conv2d, Model, Quant, TensorSpec, derive_requantization
from model_store.reference import run
from model_store.serialization import (
    FORMAT_VERSION,
    HEADER_FILTERS,
    MAGIC,
    from_bytes,
    packed_sizes,
    to_bytes,
)
from tests.model_store.synthetic import small_model


def assert_same_model(loaded: Model, original: Model) -> None:
    derive_requantization(original)  # the loaded model comes with its multipliers derived
    assert loaded.inputs == original.inputs and loaded.outputs == original.outputs
    assert loaded.tensors == original.tensors
    assert loaded.metadata == original.metadata
    assert len(loaded.layers) == len(original.layers)
    for got, expected in zip(loaded.layers, original.layers, strict=True):
        assert type(got) is type(expected)
        for field, value in vars(expected).items():
            if isinstance(value, np.ndarray):
                assert getattr(got, field).dtype == value.dtype, f"{expected.name}.{field}"
                assert np.array_equal(getattr(got, field), value), f"{expected.name}.{field}"
            else:
                assert getattr(got, field) == value, f"{expected.name}.{field}"


@pytest.mark.parametrize("codebook", list(Codebook))
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.95])
def test_round_trip_keeps_every_field_and_every_output(codebook, sparsity):
    rng = np.random.default_rng(4)
    model = small_model(rng, codebook, sparsity)
    loaded = from_bytes(to_bytes(model))
    assert_same_model(loaded, model)
    image = rng.integers(0, 256, (2, *model.tensors["image"].shape), dtype=np.uint8)
    assert np.array_equal(run(loaded, image)["out"], run(model, image)["out"])


def one_conv_model(codes, codebook, alpha, bias, groups) -> Model:
    out_channels, group_channels, kernel_h, kernel_w = codes.shape
    tensors = {
        "x": TensorSpec("x", (group_channels * groups, kernel_h + 2, kernel_w + 1), Quant(0.013, 3)),
        "y": TensorSpec("y", (out_channels, 3, 2), Quant(0.21, 128)),
    }
    conv = Conv2d("conv", "x", "y", codes, codebook, alpha, bias, groups=groups, activation=Activation.RELU6)
    return Model(["x"], ["y"], tensors, [conv], metadata={"note": "hypothesis"})


@settings(max_examples=60, deadline=None)
@given(
    codebook=st.sampled_from(list(Codebook)),
    out_per_group=st.integers(1, 5),
    group_channels=st.integers(1, 6),
    groups=st.integers(1, 3),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    density=st.sampled_from([0.0, 0.01, 0.1, 0.3, 0.5, 0.7, 1.0]),
    seed=st.integers(0, 2**32 - 1),
    bias_bits=st.integers(0, 29),
)
def test_round_trip_over_codebooks_shapes_and_sparsity(
    codebook, out_per_group, group_channels, groups, kernel, density, seed, bias_bits
):
    rng = np.random.default_rng(seed)
    shape = (out_per_group * groups, group_channels, *kernel)
    levels = codebook.levels
    codes = rng.choice(levels, size=shape)
    if 0 in levels:
        codes = np.where(rng.random(shape) < density, codes, 0).astype(np.int8)
    alpha = np.exp(rng.uniform(-12, 3, shape[0])).astype(np.float32)
    bias = rng.integers(-(2**bias_bits), 2**bias_bits, shape[0], endpoint=True).astype(np.int32)
    model = one_conv_model(codes, codebook, alpha, bias, groups)
    assert_same_model(from_bytes(to_bytes(model)), model)


def test_round_trip_keeps_extreme_biases_and_alphas():
    codes = np.zeros((4, 1, 1, 1), dtype=np.int8)
    # The widest alphas whose requantization scale s_in * alpha / s_out (here alpha) has a multiplier and shift.
    alpha = np.array([2.0**-32, 2.0e9, 1.0, np.nextafter(np.float32(1), np.float32(2))], dtype=np.float32)
    bias = np.array([-(2**31) + 1, 2**31 - 1, 0, -1], dtype=np.int32)
    tensors = {"x": TensorSpec("x", (1, 1, 1), Quant(1.0)), "y": TensorSpec("y", (4, 1, 1), Quant(1.0))}
    model = Model(["x"], ["y"], tensors, [Conv2d("conv", "x", "y", codes, Codebook.TERNARY, alpha, bias)])
    assert_same_model(from_bytes(to_bytes(model)), model)


def test_to_bytes_refuses_an_alpha_whose_requantization_has_no_multiplier():
    tensors = {"x": TensorSpec("x", (1, 1, 1), Quant(1.0)), "y": TensorSpec("y", (1, 1, 1), Quant(1.0))}
    codes, bias = np.ones((1, 1, 1, 1), dtype=np.int8), np.zeros(1, dtype=np.int32)
    conv = Conv2d("conv", "x", "y", codes, Codebook.TERNARY, np.array([1e-30], dtype=np.float32), bias)
    with pytest.raises(ValueError, match="layer 'conv': a requantization scale must lie in"):
        to_bytes(Model(["x"], ["y"], tensors, [conv]))


def test_a_detector_sized_pow2_4_model_at_90_percent_sparsity_is_40_times_smaller(detector_pow2_4):
    convs = [layer for layer in detector_pow2_4.layers if isinstance(layer, Conv2d)]
    pow2 = [layer for layer in convs if layer.codebook is Codebook.POW2_4]
    weights = sum(layer.codes.size for layer in convs)
    assert 0.75e6 < weights < 0.77e6 and 1650 < sum(layer.codes.shape[0] for layer in convs) < 1750
    assert convs[0].codebook is Codebook.INT8 and convs[-1].codebook is Codebook.INT8
    zeros = sum(np.count_nonzero(layer.codes == 0) for layer in pow2) / sum(layer.codes.size for layer in pow2)
    assert zeros == pytest.approx(0.9, abs=1e-5)

    packed = to_bytes(detector_pow2_4)
    float32_bytes = 4 * sum(layer.codes.size + layer.bias.size for layer in convs)
    ratio = float32_bytes / len(packed)
    assert ratio >= 40, f"{len(packed)} bytes, {ratio:.2f}x smaller than float32"
    assert 8 * len(packed) / weights < 0.8  # bits per weight, all in
    assert_same_model(from_bytes(packed), detector_pow2_4)


def test_packed_sizes_account_for_the_payload_layer_by_layer(detector_pow2_4):
    sizes = packed_sizes(detector_pow2_4)
    assert list(sizes) == [layer.name for layer in detector_pow2_4.layers]
    packed = to_bytes(detector_pow2_4)
    header_length = struct.unpack_from("<I", packed, 6)[0]
    payload = len(packed) - 10 - header_length - 4
    assert payload == int(np.ceil(sum(sizes.values())))
    pow2 = [layer for layer in detector_pow2_4.layers if getattr(layer, "codebook", None) is Codebook.POW2_4]
    assert 8 * sum(sizes[layer.name] for layer in pow2) / sum(layer.codes.size for layer in pow2) < 0.8
    for layer in detector_pow2_4.layers:
        if not isinstance(layer, Conv2d):
            assert sizes[layer.name] == 0
        elif layer.codebook is Codebook.POW2_4:
            # Under a bit per weight (dense packing takes 3) plus alpha and bias per channel.
            assert sizes[layer.name] * 8 < layer.codes.size + 48 * layer.codes.shape[0]
        else:
            # dense int8: 8 bits per code, plus alpha and bias per channel
            assert layer.codes.size <= sizes[layer.name] <= layer.codes.size + 8 * layer.codes.shape[0]


@pytest.mark.parametrize("codebook", list(Codebook))
def test_uniformly_random_codes_cost_at_most_the_codebook_width(codebook):
    # Uniform codes over all levels are incompressible: the size lies between their entropy and the packed width.
    rng = np.random.default_rng(1)
    codes = rng.choice(codebook.levels, size=(16, 32, 3, 3)).astype(np.int8)
    alpha = np.full(16, 0.01, dtype=np.float32)
    bias = np.zeros(16, dtype=np.int32)
    tensors = {"x": TensorSpec("x", (32, 5, 4), Quant(0.1)), "y": TensorSpec("y", (16, 3, 2), Quant(0.1))}
    model = Model(["x"], ["y"], tensors, [Conv2d("conv", "x", "y", codes, codebook, alpha, bias)])
    per_channel_bits = 23 + 2 + 1  # alpha mantissa, its exponent and a zero bias, Golomb coded
    size = packed_sizes(model)["conv"]
    assert codes.size * np.log2(codebook.levels.size) / 8 <= size
    assert size <= (codes.size * codebook.bits + 16 * per_channel_bits) / 8


def test_serialization_of_one_million_weights_stays_vectorized(detector_pow2_4):
    # The detector (0.76 M weights) round trips; correctness here, speed in the report (no timed tests).
    assert len(from_bytes(to_bytes(detector_pow2_4)).layers) == len(detector_pow2_4.layers)


def test_to_bytes_refuses_an_invalid_model():
    model = small_model(np.random.default_rng(0))
    model.layers[0].bias = model.layers[0].bias.astype(np.int64)
    with pytest.raises(ValueError, match="bias must be a int32 array"):
        to_bytes(model)


def test_to_bytes_refuses_metadata_that_is_not_json():
    model = small_model(np.random.default_rng(0))
    model.metadata = {"mean": np.float32(0.5)}
    with pytest.raises(ValueError, match="metadata must be plain JSON"):
        to_bytes(model)
    model.metadata = {"mean": float("nan")}
    with pytest.raises(ValueError, match="metadata must be plain JSON"):
        to_bytes(model)


@pytest.fixture(scope="module")
def packed_small():
    return to_bytes(small_model(np.random.default_rng(5), Codebook.POW2_4, 0.6))


def with_checksum(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_from_bytes_names_a_wrong_magic(packed_small):
    with pytest.raises(ValueError, match="not a model IR: magic"):
        from_bytes(with_checksum(b"ONNX" + packed_small[4:-4]))


def test_from_bytes_names_an_unsupported_version(packed_small):
    body = packed_small[:4] + struct.pack("<H", FORMAT_VERSION + 1) + packed_small[6:-4]
    with pytest.raises(ValueError, match=f"format version {FORMAT_VERSION + 1} is not supported"):
        from_bytes(with_checksum(body))


def test_from_bytes_detects_a_flipped_bit(packed_small):
    corrupted = bytearray(packed_small)
    corrupted[len(corrupted) // 2] ^= 0x10
    with pytest.raises(ValueError, match="checksum mismatch"):
        from_bytes(bytes(corrupted))


@pytest.mark.parametrize("keep", [0, 3, 9, 10, 13, 40, -5, -1])
def test_from_bytes_refuses_truncated_data(packed_small, keep):
    with pytest.raises(ValueError, match="truncated"):
        from_bytes(packed_small[:keep])


def test_from_bytes_refuses_what_is_not_bytes():
    with pytest.raises(ValueError, match="a model IR is bytes, got str"):
        from_bytes("SPIR")


def test_from_bytes_refuses_a_payload_longer_than_the_layers_need(packed_small):
    with pytest.raises(ValueError, match="bits no layer accounts for"):
        from_bytes(with_checksum(packed_small[:-4] + b"\x00"))


def test_from_bytes_refuses_a_header_that_claims_huge_weights(packed_small):
    header_length = struct.unpack_from("<I", packed_small, 6)[0]
    header = json.loads(lzma.decompress(packed_small[10 : 10 + header_length], lzma.FORMAT_RAW, filters=HEADER_FILTERS))
    conv = next(entry for entry in header["layers"] if entry["kind"] == "conv2d")
    conv["shape"] = [2**20, 2**20, 3, 3]
    with pytest.raises(ValueError, match="weight limit"):
        from_bytes(rebuild(packed_small, header))


def rebuild(packed: bytes, header: dict, payload: bytes | None = None) -> bytes:
    """The same file with another header (and payload), checksum fixed: what passes the integrity check."""
    header_length = struct.unpack_from("<I", packed, 6)[0]
    payload = packed[10 + header_length : -4] if payload is None else payload
    text = lzma.compress(json.dumps(header).encode(), format=lzma.FORMAT_RAW, filters=HEADER_FILTERS)
    return with_checksum(MAGIC + struct.pack("<HI", FORMAT_VERSION, len(text)) + text + payload)


def only_value_errors(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        from_bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_mutations_raise_nothing_but_value_error(packed_small, data):
    mutated = bytearray(packed_small)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if action == "flip":
            mutated[position] ^= data.draw(st.integers(1, 255))
        elif action == "delete":
            del mutated[position]
        else:
            mutated.insert(position, data.draw(st.integers(0, 255)))
    only_value_errors(bytes(mutated))
    # The same mutation with the checksum fixed reaches the header and payload decoders.
    only_value_errors(with_checksum(bytes(mutated[:-4])))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)


def header_paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from header_paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from header_paths(child, (*path, index))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_lying_header_raises_nothing_but_value_error(packed_small, data):
    header_length = struct.unpack_from("<I", packed_small, 6)[0]
    header = json.loads(lzma.decompress(packed_small[10 : 10 + header_length], lzma.FORMAT_RAW, filters=HEADER_FILTERS))
    path = data.draw(st.sampled_from(list(header_paths(header))[1:]))
    parent = header
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = data.draw(json_values)
    only_value_errors(rebuild(packed_small, header))


def test_the_header_is_json_and_the_payload_holds_only_weights(packed_small):
    header_length = struct.unpack_from("<I", packed_small, 6)[0]
    assert packed_small[:4] == MAGIC
    header = json.loads(lzma.decompress(packed_small[10 : 10 + header_length], lzma.FORMAT_RAW, filters=HEADER_FILTERS))
    assert {"ir_version", "inputs", "outputs", "tensors", "layers", "metadata"} <= set(header)
    assert "multiplier" not in json.dumps(header)  # derived on load, never stored
