"""The `reference` runtime: model_store's numpy executor, the golden model every other runtime is checked against."""

import numpy as np

from edge_agent.runtimes.base import Runtime, register_runtime
from model_store import reference
from model_store.package import Package


@register_runtime("reference")
class ReferenceRuntime(Runtime):
    """Runs the package's integer IR with `model_store.reference`: exact, portable, and slow."""

    def _load(self, package: Package, model) -> None:
        self._model = model

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        codes = reference.run(self._model, batch)
        return {name: reference.dequantize(quant, codes[name]) for name, quant in self.output_quants.items()}

    def _close(self) -> None:
        self._model = None
