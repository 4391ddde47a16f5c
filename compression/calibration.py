"""Activation ranges for every tensor of the integer IR: from calibration data, or from batch-norm statistics alone.

Both return {fx node name: (min, max)} over the batch-norm-folded graph, which `compression.lowering` turns into
each tensor's uint8 scale and zero point.
"""

import math
from collections.abc import Iterable

import torch
from torch import fx, nn

from compression.fold import fold_batch_norm, foldable_batch_norms, trace_layers
from compression.lowering import Range, layer_kind
from compression.progress import LossFunction, cycle_batches

# Shipped detector, int8 weights, ranges from 8 held-out frames, COCO mAP on 120 others (fp32: 0.633):
# percentile 100 (min/max) 0.629, 99.999 0.630, 99.99 0.627, and on 40 frames 99.9 lost 0.03. Clipping
# deeper cuts the tails of the linear output heads (large boxes' log sizes); 99.999 only drops the few
# outliers per 10^5 values that would stretch a grid.
DEFAULT_PERCENTILE = 99.999
# Each batch keeps this many times its share of the extremes (at least MIN_TAIL_KEPT values per end), so that
# batches of different scenes (a bright day, a dark night) still yield the percentile of all their values.
TAIL_SURPLUS = 8
MIN_TAIL_KEPT = 1024
# A post-BN value is ~ N(beta, gamma^2). Same detector and frames: k = 6 gave mAP 0.630 (as good as data),
# k = 5 0.615, and on 40 frames k = 4 lost 0.04 and k = 3 0.14: the ReLU ranges must hold the tails.
DEFAULT_NUM_STD = 6.0


def calibrate(model: nn.Module, batches: Iterable[torch.Tensor], percentile: float = DEFAULT_PERCENTILE) -> dict:
    """Ranges of every node output of the folded model over the batches: the (100 - p)th and pth percentiles.

    percentile=100 gives min/max. A percentile is that of all elements of all batches (linear interpolation, as
    numpy's), computed from each batch's most extreme values so memory stays small (a frame of the detector has
    5.6 M activations): exact for min/max and for one batch, and for several unless one batch holds more than
    `TAIL_SURPLUS` times its share of the overall extremes, and more than `MIN_TAIL_KEPT` of them.
    """
    if not 50.0 < percentile <= 100.0:
        raise ValueError(f"the calibration percentile lies in (50, 100], got {percentile}")
    tail_fraction = (100.0 - percentile) / 100.0
    recorder = _TailRecorder(fold_batch_norm(model), tail_fraction)
    with torch.no_grad():
        for batch in batches:
            recorder.run(batch)
    if not recorder.counts:
        raise ValueError("calibration needs at least one batch")
    ranges = {}
    for name, count in recorder.counts.items():
        lowest = torch.cat(recorder.lowest[name]).sort().values
        highest = torch.cat(recorder.highest[name]).sort(descending=True).values
        ranges[name] = (_from_extreme(lowest, count, tail_fraction), _from_extreme(highest, count, tail_fraction))
    return ranges


class _TailRecorder(fx.Interpreter):
    """Runs the graph and keeps, per tensor-valued node, the count and the extreme values at both ends."""

    def __init__(self, module: fx.GraphModule, tail_fraction: float):
        super().__init__(module)
        self.tail_fraction = tail_fraction
        self.counts: dict[str, int] = {}
        self.lowest: dict[str, list[torch.Tensor]] = {}
        self.highest: dict[str, list[torch.Tensor]] = {}

    def run_node(self, node: fx.Node):
        result = super().run_node(node)
        if node.op != "output" and isinstance(result, torch.Tensor) and result.is_floating_point():
            values = result.detach().reshape(-1).double()
            # Two more than the tail: the interpolated percentile reads the order statistics on both sides of it.
            tail = TAIL_SURPLUS * math.ceil(self.tail_fraction * len(values)) + 2
            kept = min(len(values), max(tail, MIN_TAIL_KEPT))
            self.counts[node.name] = self.counts.get(node.name, 0) + len(values)
            self.lowest.setdefault(node.name, []).append(values.topk(kept, largest=False).values)
            self.highest.setdefault(node.name, []).append(values.topk(kept).values)
        return result


def _from_extreme(ordered: torch.Tensor, count: int, tail_fraction: float) -> float:
    """The value `tail_fraction` of the way into `count` values from one end, given that end's values in order."""
    position = (count - 1) * tail_fraction
    index = min(math.floor(position), len(ordered) - 1)
    weight = position - index
    if weight == 0 or index + 1 >= len(ordered):
        return float(ordered[index])
    return float(ordered[index] * (1 - weight) + ordered[index + 1] * weight)


def data_free_ranges(
    model: nn.Module,
    input_range: Range = (0.0, 1.0),
    input_channels: int = 3,
    num_std: float = DEFAULT_NUM_STD,
) -> dict:
    """Ranges from batch-norm statistics alone, as in data-free quantization (Nagel et al. 2019).

    The model must still have its batch norms. Each channel is tracked as a Gaussian (mean, std): after a
    batch norm N(beta, gamma^2); through a ReLU the clipped Gaussian's moments; through a conv without batch
    norm its weights (mean W mu + b, variance W^2 sigma^2, inputs taken as independent); sums add means and
    variances; upsampling and max pooling keep them. A tensor's range is [min mu - k sigma, max mu + k sigma]
    over its channels (k = num_std), [0, max mu + k sigma] after a ReLU, capped by what its inputs allow.
    The input is uniform over `input_range`.
    """
    if num_std <= 0:
        raise ValueError(f"num_std must be positive, got {num_std}")
    low, high = (float(v) for v in input_range)
    if not low < high:
        raise ValueError(f"the input range must have min < max, got {input_range}")
    traced = trace_layers(model.eval())
    modules = dict(traced.named_modules())
    batch_norm_of = {conv.name: modules[bn.target] for conv, bn in foldable_batch_norms(traced)}
    statistics: dict[str, _ChannelStatistics] = {}
    ranges: dict[str, Range] = {}
    for node in traced.graph.nodes:
        if node.op == "output":
            continue
        if node.op == "placeholder":
            mean = torch.full((input_channels,), (low + high) / 2, dtype=torch.float64)
            std = torch.full((input_channels,), (high - low) / math.sqrt(12), dtype=torch.float64)
            statistics[node.name] = _ChannelStatistics(mean, std, low, high)
        else:
            statistics[node.name] = _propagate(
                node, layer_kind(node, modules), modules, statistics, batch_norm_of, num_std
            )
        ranges[node.name] = (statistics[node.name].low, statistics[node.name].high)
    return ranges


class _ChannelStatistics:
    """Per-channel Gaussian moments of a tensor and the range its values are taken to lie in."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, low: float, high: float):
        self.mean, self.std, self.low, self.high = mean, std, low, high


def _gaussian_range(mean: torch.Tensor, std: torch.Tensor, num_std: float) -> tuple[float, float]:
    return float((mean - num_std * std).min()), float((mean + num_std * std).max())


def _propagate(node, kind, modules, statistics, batch_norm_of, num_std) -> _ChannelStatistics:
    if kind in ("conv", "batchnorm"):
        module = modules[node.target]
        source = statistics[node.args[0].name]
        if kind == "batchnorm" or node.name in batch_norm_of:
            bn = module if kind == "batchnorm" else batch_norm_of[node.name]
            mean, std = bn.bias.detach().double(), bn.weight.detach().double().abs()
        else:
            mean, std = _conv_moments(module, source)
        return _ChannelStatistics(mean, std, *_gaussian_range(mean, std, num_std))
    if kind in ("relu", "relu6"):
        source = statistics[node.args[0].name]
        mean, std = _relu_moments(source.mean, source.std)
        high = min(float((source.mean + num_std * source.std).max()), source.high)
        high = max(0.0, min(high, 6.0) if kind == "relu6" else high)
        return _ChannelStatistics(mean, std, 0.0, high)
    if kind == "add":
        first, second = (statistics[value.name] for value in node.args)
        mean, std = first.mean + second.mean, torch.sqrt(first.std**2 + second.std**2)
        low, high = _gaussian_range(mean, std, num_std)
        return _ChannelStatistics(mean, std, max(low, first.low + second.low), min(high, first.high + second.high))
    if kind in ("upsample", "maxpool"):
        return statistics[node.args[0].name]
    if kind == "concat":
        parts = [statistics[value.name] for value in node.args[0]]
        return _ChannelStatistics(
            torch.cat([part.mean for part in parts]),
            torch.cat([part.std for part in parts]),
            min(part.low for part in parts),
            max(part.high for part in parts),
        )
    raise ValueError(f"node {node.name!r} ({node.op} {node.target}) has no data-free range propagation")


def _conv_moments(conv: nn.Conv2d, source: _ChannelStatistics) -> tuple[torch.Tensor, torch.Tensor]:
    weight = conv.weight.detach().double()
    out_channels, group_width = weight.shape[:2]
    group_of_output = torch.arange(out_channels) // (out_channels // conv.groups)
    input_mean = source.mean.view(conv.groups, group_width)[group_of_output]
    input_var = (source.std**2).view(conv.groups, group_width)[group_of_output]
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros(out_channels, dtype=torch.float64)
    mean = bias + (weight.sum(dim=(2, 3)) * input_mean).sum(dim=1)
    var = ((weight**2).sum(dim=(2, 3)) * input_var).sum(dim=1)
    return mean, var.sqrt()


def _relu_moments(mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of max(0, X) for X ~ N(mean, std^2), per channel."""
    std = std.clamp(min=1e-12)
    z = mean / std
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    pdf = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    first = mean * cdf + std * pdf
    second = (mean**2 + std**2) * cdf + mean * std * pdf
    return first, (second - first**2).clamp(min=0).sqrt()


def reestimate_batch_norm_(model: nn.Module, data: Iterable, loss_fn: LossFunction, batches: int) -> int:
    """Recompute every batch norm's running statistics as the plain average over `batches` training batches.

    Training keeps running statistics as an exponential average (momentum 0.1) of the last few batches,
    which saw weights that kept moving; after quantization the weights are final, so a cumulative average
    over many batches with those weights is what inference should normalize by (the batch-norm
    re-estimation of quantization-aware training; Krishnamoorthi 2018, section 3.2.1). Only the forward
    pass of `loss_fn(model, batch)` matters; nothing trains. Returns the number of batches used (the data
    is cycled when shorter).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or batches <= 0:
        return 0
    was_training = model.training
    momenta = [norm.momentum for norm in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average: every batch weighs the same
        norm.train()
    stream = cycle_batches(data)
    try:
        with torch.no_grad():
            for _ in range(batches):
                loss_fn(model, next(stream))
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)
    return batches
