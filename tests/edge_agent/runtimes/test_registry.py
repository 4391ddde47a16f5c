import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_agent.runtimes import (
    Runtime,
    RuntimeNotLoaded,
    RuntimeUnavailable,
    available_runtimes,
    choose_runtime,
    create_runtime,
    nchw_batch,
    register_runtime,
)
from edge_agent.runtimes.base import RUNTIMES
from edge_agent.runtimes.cpu_int8 import CpuInt8Runtime
from edge_agent.runtimes.reference import ReferenceRuntime

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def runtime_needing_a_missing_module():
    @register_runtime("needs-missing", requires=("a_module_this_agent_does_not_have",))
    class NeedsMissing(ReferenceRuntime):
        pass

    yield NeedsMissing
    del RUNTIMES["needs-missing"]


def test_the_built_in_runtimes_are_available_here():
    assert available_runtimes() == ["cpu-int8", "reference"]
    assert isinstance(create_runtime("reference"), ReferenceRuntime)
    assert isinstance(create_runtime("cpu-int8"), CpuInt8Runtime)


def test_a_runtime_whose_dependency_does_not_import_is_not_advertised(runtime_needing_a_missing_module):
    assert "needs-missing" in RUNTIMES
    assert "needs-missing" not in available_runtimes()
    with pytest.raises(RuntimeUnavailable, match="needs a_module_this_agent_does_not_have"):
        create_runtime("needs-missing")
    # a package that only this runtime could run cannot be loaded here
    expected = r"supports \['needs-missing'\], this agent has \['cpu-int8', 'reference'\]"
    with pytest.raises(RuntimeUnavailable, match=expected):
        choose_runtime(["needs-missing"])


def test_create_runtime_names_the_registered_runtimes_for_an_unknown_name():
    with pytest.raises(RuntimeUnavailable, match=r"no runtime named 'tensorrt'; registered runtimes: \[.*'cpu-int8'"):
        create_runtime("tensorrt")


def test_create_runtime_passes_options_and_they_are_checked():
    assert create_runtime("cpu-int8", threads=2).threads == 2
    with pytest.raises(ValueError, match="threads is a positive integer"):
        create_runtime("cpu-int8", threads=0)
    with pytest.raises(TypeError):
        create_runtime("reference", threads=2)


def test_registering_twice_or_a_non_runtime_is_refused():
    with pytest.raises(ValueError, match="'reference' is already registered by ReferenceRuntime"):

        @register_runtime("reference")
        class Other(ReferenceRuntime):
            pass

    with pytest.raises(TypeError, match="decorates a Runtime subclass"):
        register_runtime("not-a-runtime")(dict)
    assert RUNTIMES["reference"] is ReferenceRuntime and "not-a-runtime" not in RUNTIMES


def test_choose_runtime_follows_the_package_order_unless_the_agent_prefers_another():
    assert choose_runtime(["cpu-int8", "reference"]) == "cpu-int8"
    assert choose_runtime(["reference", "cpu-int8"]) == "reference"
    assert choose_runtime(["reference", "cpu-int8"], preferred="cpu-int8") == "cpu-int8"
    assert choose_runtime(["reference", "cpu-int8"], preferred=["fpga-sim", "cpu-int8"]) == "cpu-int8"
    # a preference the package does not support falls back to the package's order
    assert choose_runtime(["reference"], preferred="cpu-int8") == "reference"
    # runtimes this agent lacks are skipped
    assert choose_runtime(["fpga-sim", "triton", "cpu-int8"]) == "cpu-int8"


def test_choose_runtime_names_both_lists_when_nothing_fits():
    with pytest.raises(RuntimeUnavailable) as raised:
        choose_runtime(["fpga-sim", "triton"], preferred="cpu-int8")
    message = str(raised.value)
    assert "the package supports ['fpga-sim', 'triton']" in message
    assert "this agent has ['cpu-int8', 'reference']" in message


def test_a_runtime_refuses_to_infer_before_load_and_after_close(package):
    runtime = create_runtime("reference")
    frames = np.zeros((1, 3, 64, 96), np.uint8)
    with pytest.raises(RuntimeNotLoaded, match="load a package before calling infer"):
        runtime.infer(frames)
    with pytest.raises(TypeError, match=r"verified model_store\.package\.Package"):
        runtime.load(package.files["model.ir"])
    runtime.load(package)
    assert set(runtime.infer(frames)) == set(package.integer_model().outputs)
    runtime.close()
    with pytest.raises(RuntimeNotLoaded):
        runtime.infer(frames)
    assert runtime.info()["loaded"] is False


@pytest.mark.parametrize("name", ["reference", "cpu-int8"])
def test_infer_refuses_frames_of_the_wrong_layout_size_or_type(package, name):
    with create_runtime(name) as runtime:
        runtime.load(package)
        for wrong in (
            np.zeros((1, 64, 96, 3), np.uint8),  # NHWC
            np.zeros((1, 3, 64, 96), np.float32),
            np.zeros((3, 64, 96), np.uint8),
            np.zeros((1, 3, 48, 96), np.uint8),
        ):
            with pytest.raises(ValueError, match=r"expected uint8 \(N, 3, 64, 96\) frames, got"):
                runtime.infer(wrong)
        assert runtime.info()["calls"] == 0


def test_nchw_batch_turns_rgb_frames_into_the_runtime_layout():
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 4, 5, 3), dtype=np.uint8)
    batch = nchw_batch(list(frames))
    assert batch.shape == (2, 3, 4, 5) and batch.flags.c_contiguous
    assert batch[1, 2, 3, 4] == frames[1, 3, 4, 2]
    assert nchw_batch(frames[0]).shape == (1, 3, 4, 5)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) or \(N, H, W, 3\) uint8 RGB"):
        nchw_batch(np.zeros((2, 3, 4, 5), np.uint8))


def test_the_runtimes_and_video_sources_import_without_torch_or_django():
    # The agent extra installs neither torch nor Django (tests/test_layout.py checks the rest of the agent).
    code = (
        "import sys, edge_agent.runtimes, edge_agent.runtimes.selftest, edge_agent.video;"
        "bad = [m for m in ('django', 'torch') if m in sys.modules];"
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr + result.stdout


def test_runtime_is_abstract():
    with pytest.raises(TypeError):
        Runtime()
