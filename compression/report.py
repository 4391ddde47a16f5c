"""The report of a compression job: per layer bits, sparsity and bytes; the total ratio; metric and time.

Bytes are the real packed sizes of `model_store.serialization` (codes at their width, zeros run-length
coded), and the total ratio is fp32 bytes of the float model's parameters over the bytes of the whole
`model.ir` file, header included, so the number is what a device downloads.
"""

from dataclasses import asdict, dataclass, field

import numpy as np
from torch import nn

from compression.admm import QuantizationReport
from compression.fold import trace_layers
from compression.pruning import PruningReport
from model_store import ir
from model_store.serialization import packed_sizes, to_bytes

FP32_BYTES = 4


@dataclass
class LayerReport:
    name: str
    codebook: str
    bits: int  # bits per code when bit-packed densely
    weights: int
    sparsity: float  # fraction of zero codes
    packed_bytes: float  # this layer's share of the payload: codes, per-channel scales and biases
    # With mixed precision by sensitivity: how much the loss rose with this layer alone projected onto the
    # main codebook (compression.sensitivity); None where it was not measured.
    sensitivity: float | None = None


@dataclass
class CompressionReport:
    layers: list[LayerReport]
    fp32_bytes: int  # 4 bytes per float parameter of the original model (weights, biases, batch norm)
    packed_bytes: int  # the whole model.ir file
    data_free: bool
    metric_before: float | None = None
    metric_after: float | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase and in total
    loss_history: list[float] = field(default_factory=list)
    residual: float | None = None  # mean final ||W - G|| / ||W|| over the quantized layers
    pruned_sparsity: float | None = None

    @property
    def compression_ratio(self) -> float:
        return self.fp32_bytes / self.packed_bytes

    @property
    def sparsity(self) -> float:
        """Fraction of zero codes over all weights of the integer model."""
        total = sum(layer.weights for layer in self.layers)
        return sum(layer.weights * layer.sparsity for layer in self.layers) / max(total, 1)

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "compression_ratio": self.compression_ratio,
            "sparsity": self.sparsity,
        }

    def markdown(self) -> str:
        """The per-layer table and the totals, for a terminal, a job page or docs."""
        rows = [
            "| layer | codebook | bits | weights | sparsity | packed bytes |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        rows += [
            f"| {layer.name} | {layer.codebook} | {layer.bits} | {layer.weights:,} | {layer.sparsity:.1%} "
            f"| {layer.packed_bytes:,.0f} |"
            for layer in self.layers
        ]
        summary = [
            f"fp32 {self.fp32_bytes:,} B -> model.ir {self.packed_bytes:,} B: **{self.compression_ratio:.1f}x**, "
            f"sparsity {self.sparsity:.1%}, {'data-free' if self.data_free else 'data-dependent'}"
        ]
        if self.metric_before is not None and self.metric_after is not None:
            summary.append(
                f"metric {self.metric_before:.4f} -> {self.metric_after:.4f} "
                f"({self.metric_after - self.metric_before:+.4f})"
            )
        if "total" in self.timings:
            summary.append(f"wall time {self.timings['total']:.1f} s")
        return "\n".join(rows) + "\n\n" + "; ".join(summary)


def build_report(
    original: nn.Module,
    integer_model: ir.Model,
    *,
    quantization: QuantizationReport | None,
    pruning: PruningReport | None,
    data_free: bool,
    metric_before: float | None = None,
    metric_after: float | None = None,
    timings: dict[str, float] | None = None,
) -> CompressionReport:
    sizes = packed_sizes(integer_model)
    sensitivity = {}
    if quantization is not None and quantization.sensitivity:
        # The IR names a layer after its node in the lowering's fx graph; the measurement, after its module.
        ir_names = {node.target: node.name for node in trace_layers(original).graph.nodes if node.op == "call_module"}
        sensitivity = {ir_names[module]: value for module, value in quantization.sensitivity.items()}
    layers = [
        LayerReport(
            name=layer.name,
            codebook=str(layer.codebook),
            bits=layer.codebook.bits,
            weights=int(layer.codes.size),
            sparsity=float(np.mean(layer.codes == 0)),
            packed_bytes=sizes[layer.name],
            sensitivity=sensitivity.get(layer.name),
        )
        for layer in integer_model.layers
        if isinstance(layer, ir.Conv2d)
    ]
    losses = []
    if pruning is not None:
        losses += pruning.loss_history
    residual = None
    if quantization is not None:
        losses += quantization.loss_history
        if quantization.layers:
            residual = float(np.mean([layer.residual for layer in quantization.layers]))
    return CompressionReport(
        layers=layers,
        fp32_bytes=FP32_BYTES * sum(p.numel() for p in original.parameters()),
        packed_bytes=len(to_bytes(integer_model)),
        data_free=data_free,
        metric_before=metric_before,
        metric_after=metric_after,
        timings=dict(timings or {}),
        loss_history=losses,
        residual=residual,
        pruned_sparsity=None if pruning is None else pruning.sparsity,
    )
