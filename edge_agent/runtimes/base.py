"""The interface every runtime implements, and the registry the `@register_runtime` decorator fills.

A runtime runs one verified model package. Its input is a batch of uint8 frames in the layout of the package
(N, C, H, W): the IR's layout, the self-test set's and the ONNX model's, so no runtime transposes behind the
caller's back. `nchw_batch` turns the (H, W, 3) RGB frames a video source yields into such a batch. Its output
is the IR outputs by name, in the IR's order, as float32 real values (`model_store.reference.dequantize` of the
uint8 codes), so a decoder never needs to know which runtime produced them.
"""

import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from model_store.ir import Quant
from model_store.package import Package

# Latency percentiles are over the most recent calls: enough for a stable p95, bounded for a long-running agent.
LATENCY_WINDOW = 1000


class RuntimeUnavailable(LookupError):
    """No runtime of that name is registered, its optional dependency is missing, or none fits a package."""


class RuntimeNotLoaded(RuntimeError):
    """`infer` was called before `load` or after `close`."""


class Runtime(ABC):
    """One inference engine for model packages. Subclasses implement `_load`, `_infer` and `_close`."""

    # Set by @register_runtime.
    name: str = ""
    # Modules that must import for the runtime to work (checked by `available_runtimes`), e.g. ("onnxruntime",).
    requires: tuple[str, ...] = ()

    def __init__(self):
        self.package: Package | None = None
        self.inputs: list[str] = []
        self.input_shape: tuple[int, ...] = ()
        self.output_quants: dict[str, Quant] = {}
        self._latencies_s: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._frames = 0

    def load(self, package: Package) -> None:
        """Prepare to run a package whose signature and hashes `read_package` has checked."""
        if not isinstance(package, Package):
            raise TypeError(f"a runtime loads a verified model_store.package.Package, got {type(package).__name__}")
        model = package.integer_model()
        if len(model.inputs) != 1:
            raise ValueError(f"runtime {self.name}: the model has {len(model.inputs)} inputs, runtimes feed one")
        self.close()
        self.inputs = list(model.inputs)
        self.input_shape = tuple(model.tensors[model.inputs[0]].shape)
        self.output_quants = {name: model.tensors[name].quant for name in model.outputs}
        self._latencies_s.clear()
        self._frames = 0
        self._load(package, model)
        self.package = package

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run a uint8 (N, C, H, W) batch; returns the IR outputs by name as float32 (N, C', H', W') arrays."""
        if self.package is None:
            raise RuntimeNotLoaded(f"runtime {self.name}: load a package before calling infer")
        batch = np.asarray(batch)
        if batch.dtype != np.uint8 or batch.ndim != 4 or tuple(batch.shape[1:]) != self.input_shape:
            raise ValueError(
                f"runtime {self.name}: expected uint8 (N, {', '.join(map(str, self.input_shape))}) frames, "
                f"got {batch.dtype} {batch.shape}; nchw_batch() converts (H, W, 3) RGB frames"
            )
        started = time.perf_counter()
        outputs = self._infer(np.ascontiguousarray(batch))
        self._latencies_s.append(time.perf_counter() - started)
        self._frames += len(batch)
        return outputs

    def close(self) -> None:
        """Release the engine; `load` may be called again afterwards."""
        if self.package is not None:
            self._close()
        self.package = None

    def info(self) -> dict:
        """What the agent reports about this runtime: name, model, calls and latency of the calls so far."""
        latencies_ms = [1000 * seconds for seconds in self._latencies_s]
        info = {
            "runtime": self.name,
            "loaded": self.package is not None,
            "calls": len(self._latencies_s),
            "frames": self._frames,
            "latency_ms_p50": round(float(np.percentile(latencies_ms, 50)), 3) if latencies_ms else None,
            "latency_ms_p95": round(float(np.percentile(latencies_ms, 95)), 3) if latencies_ms else None,
        }
        if self.package is not None:
            info["model"] = {"name": self.package.manifest.name, "version": self.package.manifest.version}
        return info

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    @abstractmethod
    def _load(self, package: Package, model) -> None: ...

    @abstractmethod
    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _close(self) -> None: ...


RUNTIMES: dict[str, type[Runtime]] = {}


def register_runtime(name: str, requires: Sequence[str] = ()) -> Callable[[type[Runtime]], type[Runtime]]:
    """Class decorator: make a Runtime subclass creatable by `name`; `requires` lists its optional modules."""

    def register(cls: type[Runtime]) -> type[Runtime]:
        if not (isinstance(cls, type) and issubclass(cls, Runtime)):
            raise TypeError(f"@register_runtime({name!r}) decorates a Runtime subclass, got {cls!r}")
        if name in RUNTIMES and RUNTIMES[name] is not cls:
            raise ValueError(f"runtime {name!r} is already registered by {RUNTIMES[name].__qualname__}")
        cls.name = name
        cls.requires = tuple(requires)
        RUNTIMES[name] = cls
        return cls

    return register


def nchw_batch(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """(H, W, 3) RGB uint8 frames, one or a sequence or an (N, H, W, 3) array, as a uint8 (N, 3, H, W) batch."""
    array = np.asarray(frames)
    if array.ndim == 3:
        array = array[None]
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected (H, W, 3) or (N, H, W, 3) uint8 RGB frames, got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array.transpose(0, 3, 1, 2))
