import numpy as np
import pytest

from compression.onnx_export import export_onnx
from edge_agent.runtimes import create_runtime
from edge_agent.runtimes.selftest import DEFAULT_TOLERANCE_LSB, requantize
from model_store import reference
from model_store.package import build_package, read_package
from model_store.serialization import to_bytes
from tests.edge_agent.runtimes.conftest import selftest_frames
from tests.model_store.synthetic import small_model


def test_the_reference_runtime_gives_the_dequantized_reference_outputs_exactly(package, model):
    frames = selftest_frames(model, seed=21)[:3]
    expected = reference.run(model, frames)
    with create_runtime("reference") as runtime:
        runtime.load(package)
        outputs = runtime.infer(frames)
        assert list(outputs) == list(model.outputs)
        for name in model.outputs:
            quant = model.tensors[name].quant
            assert outputs[name].dtype == np.float32
            np.testing.assert_array_equal(outputs[name], reference.dequantize(quant, expected[name]))
            np.testing.assert_array_equal(requantize(quant, outputs[name]), expected[name])


@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_int8_matches_the_reference_within_the_tolerance(package, model, threads):
    frames = selftest_frames(model, seed=22)
    expected = reference.run(model, frames)
    with create_runtime("cpu-int8", threads=threads) as runtime:
        runtime.load(package)
        outputs = {}
        for index in range(len(frames)):
            for name, value in runtime.infer(frames[index : index + 1]).items():
                outputs.setdefault(name, []).append(value)
        info = runtime.info()
    assert list(outputs) == list(model.outputs)
    for name in model.outputs:
        codes = requantize(model.tensors[name].quant, np.concatenate(outputs[name]))
        difference = np.abs(codes - expected[name].astype(np.int32))
        assert difference.max() <= DEFAULT_TOLERANCE_LSB, name
        # rounding differences are rare: nearly every output code is the reference's
        assert np.mean(difference == 0) > 0.95, name
    assert info["threads"] == threads
    assert info["calls"] == info["frames"] == len(frames)
    assert 0 < info["latency_ms_p50"] <= info["latency_ms_p95"]
    assert info["model"] == {"name": "park-detector", "version": 1}
    assert info["engine"].startswith("onnxruntime ")


def test_cpu_int8_reports_the_kernels_that_ran(package, model):
    with create_runtime("cpu-int8") as runtime:
        runtime.load(package)
        kernels = runtime.info()["kernels"]
    convolutions = sum(1 for layer in model.layers if type(layer).__name__ == "Conv2d")
    # every IR convolution runs as one integer or float convolution kernel
    assert sum(count for op, count in kernels.items() if op in {"QLinearConv", "Conv", "FusedConv"}) == convolutions
    assert kernels.get("QLinearConv", 0) > 0
    assert "DequantizeLinear" in kernels  # the float outputs


def test_cpu_int8_batches_give_the_same_outputs_as_single_frames(package, model):
    frames = selftest_frames(model, seed=23)[:4]
    with create_runtime("cpu-int8") as runtime:
        runtime.load(package)
        batched = runtime.infer(frames)
        single = [runtime.infer(frames[i : i + 1]) for i in range(len(frames))]
    for name in model.outputs:
        np.testing.assert_array_equal(batched[name], np.concatenate([outputs[name] for outputs in single]))


def test_cpu_int8_refuses_an_onnx_model_whose_outputs_are_not_the_irs(keyring, trusted, model):
    other = small_model(np.random.default_rng(1))
    data = build_package(
        name="park-detector",
        version=1,
        task="detection",
        labels=["car"],
        input_spec={"shape": [1, 3, 64, 96], "dtype": "uint8", "layout": "NCHW", "scale": 1 / 255},
        ir_bytes=to_bytes(model),
        onnx_bytes=export_onnx(other),
        selftest={"image": selftest_frames(model)},
        compression={},
        runtimes=["cpu-int8"],
        min_agent_version="0.1.0",
        signing_key=keyring.active(),
    )
    runtime = create_runtime("cpu-int8")
    with pytest.raises(ValueError, match=r"model.onnx has inputs \['image'\] and outputs \['out'\], but model.ir"):
        runtime.load(read_package(data, trusted))
    assert runtime.info()["loaded"] is False
