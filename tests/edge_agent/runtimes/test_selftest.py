import numpy as np
import pytest

from edge_agent.runtimes import create_runtime
from edge_agent.runtimes.selftest import DEFAULT_TOLERANCE_LSB, run_selftest
from model_store import reference
from model_store.package import read_package
from tests.edge_agent.runtimes.conftest import SELFTEST_FRAMES, package_bytes, selftest_frames


def test_the_reference_runtime_passes_its_own_selftest_exactly(package, model):
    with create_runtime("reference") as runtime:
        runtime.load(package)
        result = run_selftest(runtime, package)
    assert result.passed, result.reason
    assert result.tolerance_lsb == 0 and result.frames == SELFTEST_FRAMES
    assert result.max_abs_lsb_diff == dict.fromkeys(model.outputs, 0)


def test_cpu_int8_passes_the_selftest_of_a_good_package(package, model):
    with create_runtime("cpu-int8") as runtime:
        runtime.load(package)
        result = run_selftest(runtime, package)
    assert result.passed, result.reason
    assert result.tolerance_lsb == DEFAULT_TOLERANCE_LSB and result.reason == ""
    assert set(result.max_abs_lsb_diff) == set(model.outputs)
    assert max(result.max_abs_lsb_diff.values()) <= DEFAULT_TOLERANCE_LSB


def test_cpu_int8_fails_the_selftest_when_model_onnx_is_another_model(mismatched_package):
    # the package is validly signed: only running its self-test on the runtime shows that model.onnx is wrong
    with create_runtime("cpu-int8") as runtime:
        runtime.load(mismatched_package)
        result = run_selftest(runtime, mismatched_package)
    assert not result.passed
    assert min(result.max_abs_lsb_diff.values()) > 10 * DEFAULT_TOLERANCE_LSB
    assert "differs from the reference by" in result.reason and f"(tolerance {DEFAULT_TOLERANCE_LSB})" in result.reason
    # the IR in that package is the one the self-test was made from
    with create_runtime("reference") as runtime:
        runtime.load(mismatched_package)
        assert run_selftest(runtime, mismatched_package).passed


def test_a_zero_tolerance_is_what_the_reference_runtime_is_held_to(mismatched_package, model):
    with create_runtime("reference") as runtime:
        runtime.load(mismatched_package)
        result = run_selftest(runtime, mismatched_package, tolerance_lsb=0)
    assert result.passed and result.tolerance_lsb == 0


def test_a_selftest_set_without_the_reference_outputs_fails_with_a_reason(keyring, trusted, model):
    frames = selftest_frames(model)
    outputs = reference.run(model, frames)
    kept = {name: outputs[name] for name in model.outputs[1:]}
    data = package_bytes(keyring, model, selftest={"image": frames, **kept}, version=2)
    package = read_package(data, trusted)
    with create_runtime("reference") as runtime:
        runtime.load(package)
        result = run_selftest(runtime, package)
    assert not result.passed
    assert result.reason == f"selftest.npz has no array for {model.outputs[0]}"


def test_a_corrupted_reference_output_fails_the_exact_runtime_by_the_corruption(keyring, trusted, model):
    frames = selftest_frames(model)
    outputs = {name: value.copy() for name, value in reference.run(model, frames).items()}
    name = model.outputs[-1]
    outputs[name][0, 0, 0, 0] = np.uint8((int(outputs[name][0, 0, 0, 0]) + 1) % 256)
    data = package_bytes(keyring, model, selftest={"image": frames, **outputs}, version=3)
    package = read_package(data, trusted)
    with create_runtime("reference") as runtime:
        runtime.load(package)
        result = run_selftest(runtime, package)
    assert not result.passed
    assert result.max_abs_lsb_diff[name] in (1, 255)
    assert result.reason.startswith(f"output {name} differs from the reference by")


def test_the_selftest_needs_the_package_loaded(package, mismatched_package):
    with create_runtime("reference") as runtime:
        runtime.load(package)
        with pytest.raises(ValueError, match="has not loaded this package"):
            run_selftest(runtime, mismatched_package)
