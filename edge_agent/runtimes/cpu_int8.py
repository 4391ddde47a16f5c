"""The `cpu-int8` runtime: the package's int8 QDQ `model.onnx` on ONNX Runtime's CPU kernels.

ONNX Runtime fuses each DequantizeLinear -> Conv -> QuantizeLinear group into QLinearConv (uint8 activations,
int8 weights: the U8S8 kernels); `info()` lists the kernels that actually ran, read from one profiled warm-up
call at load time, so a model that fell back to float or to slower kernels shows it.
"""

import json
import os
import tempfile

import numpy as np

from edge_agent.runtimes.base import Runtime, register_runtime
from model_store.package import Package

DEFAULT_THREADS = 1


@register_runtime("cpu-int8", requires=("onnxruntime",))
class CpuInt8Runtime(Runtime):
    """ONNX Runtime, CPU execution provider, all graph optimizations, `threads` intra-op threads."""

    def __init__(self, threads: int = DEFAULT_THREADS):
        super().__init__()
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"cpu-int8: threads is a positive integer, got {threads!r}")
        self.threads = threads
        self._session = None
        self.kernels: dict[str, int] = {}

    def _load(self, package: Package, model) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        with tempfile.TemporaryDirectory(prefix="cpu-int8-profile-") as workdir:
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(workdir, "load")
            try:
                session = ort.InferenceSession(package.onnx_bytes, options, providers=["CPUExecutionProvider"])
            except Exception as error:  # ONNX Runtime raises its own exception types for bad models
                raise ValueError(f"cpu-int8: ONNX Runtime cannot load model.onnx: {error}") from None
            self._check_signature(session, model)
            # The warm-up call is the profiled one; profiling stops with end_profiling, so later calls are not slowed.
            session.run(None, {self.inputs[0]: np.zeros((1, *self.input_shape), np.uint8)})
            with open(session.end_profiling()) as file:
                events = json.load(file)
        self.kernels = _kernel_counts(events)
        self._session = session

    def _check_signature(self, session, model) -> None:
        inputs = [item.name for item in session.get_inputs()]
        outputs = [item.name for item in session.get_outputs()]
        if inputs != list(model.inputs) or sorted(outputs) != sorted(model.outputs):
            raise ValueError(
                f"cpu-int8: model.onnx has inputs {inputs} and outputs {outputs}, "
                f"but model.ir has inputs {list(model.inputs)} and outputs {list(model.outputs)}"
            )

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        names = list(self.output_quants)
        results = self._session.run(names, {self.inputs[0]: batch})
        return {name: np.asarray(result, dtype=np.float32) for name, result in zip(names, results, strict=True)}

    def _close(self) -> None:
        self._session = None
        self.kernels = {}

    def info(self) -> dict:
        import onnxruntime as ort

        return {
            **super().info(),
            "engine": f"onnxruntime {ort.__version__}",
            "threads": self.threads,
            "kernels": dict(self.kernels),
        }


def _kernel_counts(events: list[dict]) -> dict[str, int]:
    """How many nodes of each op type ran, from ONNX Runtime profile events (one warm-up call)."""
    counts: dict[str, int] = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op_type = event.get("args", {}).get("op_name", "?")
            counts[op_type] = counts.get(op_type, 0) + 1
    return dict(sorted(counts.items()))
