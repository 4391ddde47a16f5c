"""Unstructured pruning of Conv2d and Linear weights on a cubic sparsity schedule, with masks that quantization keeps.

The shape follows torch.ao.pruning: `prepare_masks_` attaches a mask to every prunable weight as a
parametrization (weight = original * mask, so fine-tuning cannot revive a pruned weight), `update_masks_`
prunes to a sparsity by importance, `squash_masks_` makes the zeros permanent in the weight and keeps the
mask as a `weight_mask` buffer, which `compression.admm.quantize_` reads to give pruned weights code 0.
"""

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, fx, nn
from torch.nn.utils import parametrize

from compression.progress import (
    LossFunction,
    Progress,
    ProgressCallback,
    check_loss,
    check_training_inputs,
    cycle_batches,
)

WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)
IMPORTANCES = ("taylor", "magnitude")
SCOPES = ("layer", "global")


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The Conv2d and Linear layers of a model by qualified name, in registration order."""
    return {name: module for name, module in model.named_modules() if isinstance(module, WEIGHT_LAYERS)}


def boundary_layers(model: nn.Module) -> set[str]:
    """The weight layers that read a model input or write a model output, found on the torch.fx graph.

    These are the layers that low-bit codes hurt most (the first sees raw pixels, the outputs are the
    predictions), so pruning skips them and quantization keeps them int8 by default. A model that fx
    cannot trace (data-dependent control flow) falls back to the first and last layer in registration order.
    """
    layers = weight_layers(model)
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:  # fx raises several types for untraceable Python; the fallback suits them all
        names = list(layers)
        return {names[0], names[-1]} if names else set()

    def reachable_layers(start: list[fx.Node], neighbours) -> set[str]:
        found, seen, frontier = set(), set(), list(start)
        while frontier:
            node = frontier.pop()
            if node in seen:
                continue
            seen.add(node)
            if node.op == "call_module" and node.target in layers:
                found.add(node.target)
            else:
                frontier.extend(neighbours(node))
        return found

    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    outputs = [node for node in graph.nodes if node.op == "output"]
    first = reachable_layers([user for node in placeholders for user in node.users], lambda node: node.users)
    last = reachable_layers([arg for node in outputs for arg in node.all_input_nodes], lambda n: n.all_input_nodes)
    return first | last


class WeightMask(nn.Module):
    """The parametrization weight = original * mask; the mask is a bool buffer of the weight's shape."""

    def __init__(self, mask: Tensor):
        super().__init__()
        self.register_buffer("mask", mask.bool())

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.mask


def weight_mask(module: nn.Module) -> Tensor | None:
    """The pruning mask of a layer's weight (True = kept): live parametrization first, then squashed buffer."""
    parametrization = _mask_parametrization(module)
    if parametrization is not None:
        return parametrization.mask
    mask = getattr(module, "weight_mask", None)
    return mask if isinstance(mask, Tensor) else None


def prepare_masks_(model: nn.Module, layer_names: Iterable[str]) -> dict[str, nn.Module]:
    """Attach a mask parametrization to each named layer, starting from its squashed mask if it has one."""
    layers = weight_layers(model)
    for name in layer_names:
        module = layers[name]
        if _mask_parametrization(module) is None:
            squashed = weight_mask(module)
            mask = squashed.clone() if squashed is not None else torch.ones_like(module.weight, dtype=torch.bool)
            parametrize.register_parametrization(module, "weight", WeightMask(mask))
    return {name: layers[name] for name in layer_names}


def _mask_parametrization(module: nn.Module) -> WeightMask | None:
    if parametrize.is_parametrized(module, "weight"):
        for parametrization in module.parametrizations.weight:
            if isinstance(parametrization, WeightMask):
                return parametrization
    return None


def squash_masks_(model: nn.Module) -> list[str]:
    """Make the masking permanent: the weight becomes original * mask, the mask stays as buffer `weight_mask`.

    Returns the names of the layers squashed. A squashed weight is a plain parameter again, so training
    after this point can revive pruned weights; `quantize_` zeroes them again from the buffer.
    """
    squashed = []
    for name, module in weight_layers(model).items():
        parametrization = _mask_parametrization(module)
        if parametrization is None:
            continue
        mask = parametrization.mask
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        if "weight_mask" in module._buffers:
            module.weight_mask = mask
        else:
            module.register_buffer("weight_mask", mask)
        squashed.append(name)
    return squashed


@dataclass(frozen=True)
class CubicSparsitySchedule:
    """Zhu & Gupta (2017): s_t = s_f + (s_i - s_f) (1 - t / n)^3, pruning fast early and gently at the end."""

    target: float
    steps: int
    initial: float = 0.0

    def __post_init__(self):
        if not 0 <= self.initial <= self.target < 1:
            raise ValueError(f"sparsities need 0 <= initial <= target < 1, got {self.initial} and {self.target}")
        if self.steps < 1:
            raise ValueError(f"a sparsity schedule needs at least one step, got {self.steps}")

    def sparsity_at(self, step: int) -> float:
        progress = min(max(step, 0), self.steps) / self.steps
        return self.target + (self.initial - self.target) * (1 - progress) ** 3


@dataclass
class PruneConfig:
    """How to prune: to what sparsity, on what schedule, by what importance, which layers.

    `scope` "layer" prunes every layer to the same sparsity; "global" ranks all weights together, which
    lets robust layers give more, but ranks magnitudes of differently scaled layers against each other
    (a convolution followed by batch norm has an arbitrary scale), so it suits the taylor importance only.
    """

    target_sparsity: float = 0.5
    pruning_steps: int = 10
    # Training steps after each pruning step: the network recovers before the next cut.
    finetune_steps_per_pruning_step: int = 20
    learning_rate: float = 1e-4
    importance: str = "taylor"
    importance_batches: int = 4
    scope: str = "layer"
    skip_layers: tuple[str, ...] = ()
    skip_boundary_layers: bool = True
    progress_every: int = 10

    def __post_init__(self):
        if not 0 <= self.target_sparsity < 1:
            raise ValueError(f"target_sparsity is a fraction in [0, 1), got {self.target_sparsity}")
        if self.importance not in IMPORTANCES:
            raise ValueError(f"importance is one of {IMPORTANCES}, got {self.importance!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope is one of {SCOPES}, got {self.scope!r}")
        for name in ("pruning_steps", "importance_batches", "progress_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.finetune_steps_per_pruning_step < 0:
            steps = self.finetune_steps_per_pruning_step
            raise ValueError(f"finetune_steps_per_pruning_step cannot be negative, got {steps}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if isinstance(self.skip_layers, str):
            raise ValueError(f"skip_layers is a tuple of layer names, got the string {self.skip_layers!r}")
        self.skip_layers = tuple(self.skip_layers)

    @property
    def schedule(self) -> CubicSparsitySchedule:
        return CubicSparsitySchedule(self.target_sparsity, self.pruning_steps)


@dataclass
class LayerSparsity:
    name: str
    weights: int
    sparsity: float


@dataclass
class PruningReport:
    """What prune_ did: per-layer sparsity, the importance actually used, the schedule and the loss curve."""

    layers: list[LayerSparsity]
    importance: str
    sparsity_schedule: list[float]
    loss_history: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def sparsity(self) -> float:
        """Fraction of zero weights over the pruned layers."""
        total = sum(layer.weights for layer in self.layers)
        return sum(layer.weights * layer.sparsity for layer in self.layers) / max(total, 1)


def prune_(
    model: nn.Module,
    config: PruneConfig,
    data: Iterable | None = None,
    loss_fn: LossFunction | None = None,
    progress: ProgressCallback | None = None,
) -> PruningReport:
    """Prune `model` in place to config.target_sparsity; masks stay attached as parametrizations.

    With data and loss_fn (loss_fn(model, batch) -> scalar), importance is config.importance and the model
    is fine-tuned between pruning steps; without, importance is "magnitude" and masks are set in one go
    per schedule step. Call `squash_masks_` (or `quantize_`, which does) to make the masks permanent.
    """
    started = time.time()
    training = check_training_inputs(data, loss_fn)
    layers = weight_layers(model)
    unknown = sorted(set(config.skip_layers) - set(layers))
    if unknown:
        raise ValueError(f"skip_layers names no Conv2d or Linear of the model: {unknown}")
    skipped = set(config.skip_layers) | (boundary_layers(model) if config.skip_boundary_layers else set())
    names = [name for name in layers if name not in skipped]
    if not names:
        raise ValueError("no layer is left to prune: every Conv2d and Linear is skipped")
    importance = config.importance if training else "magnitude"
    prunable = prepare_masks_(model, names)
    schedule = config.schedule
    targets = [schedule.sparsity_at(step) for step in range(1, config.pruning_steps + 1)]
    losses: list[float] = []
    was_training = model.training
    model.train(training)
    batches = cycle_batches(data) if training else None
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    finetune_total = config.pruning_steps * config.finetune_steps_per_pruning_step
    try:
        for index, sparsity in enumerate(targets):
            if importance == "taylor":
                scores = _taylor_importance(model, prunable, batches, loss_fn, config.importance_batches)
            else:
                scores = {name: _original_weight(module).detach().abs() for name, module in prunable.items()}
            update_masks_(prunable, scores, sparsity, config.scope)
            for _ in range(config.finetune_steps_per_pruning_step if training else 0):
                loss = loss_fn(model, next(batches))
                check_loss(loss, len(losses))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                if progress is not None and len(losses) % config.progress_every == 0:
                    progress(Progress("finetune", len(losses), finetune_total, losses[-1]))
            if progress is not None:
                progress(Progress("prune", index + 1, config.pruning_steps, losses[-1] if losses else None))
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    report_layers = [
        LayerSparsity(name, module.weight.numel(), 1 - weight_mask(module).float().mean().item())
        for name, module in prunable.items()
    ]
    return PruningReport(report_layers, importance, targets, losses, round(time.time() - started, 3))


def update_masks_(layers: dict[str, nn.Module], importance: dict[str, Tensor], sparsity: float, scope: str) -> None:
    """Keep the most important weights so that `sparsity` of them is pruned; pruned weights stay pruned."""
    if scope not in SCOPES:
        raise ValueError(f"scope is one of {SCOPES}, got {scope!r}")
    # Already pruned weights rank below every live one (importances are >= 0), so masks only ever shrink.
    ranked = {name: torch.where(weight_mask(module), importance[name], -1.0) for name, module in layers.items()}
    if scope == "layer":
        for name, module in layers.items():
            _keep_top(weight_mask(module), ranked[name].flatten(), sparsity)
        return
    flat = torch.cat([score.flatten() for score in ranked.values()])
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[_top_indices(flat, sparsity)] = True
    offset = 0
    for module in layers.values():
        mask = weight_mask(module)
        mask.copy_(keep[offset : offset + mask.numel()].reshape(mask.shape))
        offset += mask.numel()


def _keep_top(mask: Tensor, score: Tensor, sparsity: float) -> None:
    keep = torch.zeros_like(score, dtype=torch.bool)
    keep[_top_indices(score, sparsity)] = True
    mask.copy_(keep.reshape(mask.shape))


def _top_indices(score: Tensor, sparsity: float) -> Tensor:
    kept = round(score.numel() * (1 - sparsity))
    return score.topk(kept).indices


def _original_weight(module: nn.Module) -> Tensor:
    return module.parametrizations.weight.original


def _taylor_importance(
    model: nn.Module, layers: dict[str, nn.Module], batches, loss_fn: LossFunction, batch_count: int
) -> dict[str, Tensor]:
    """|w * dL/dw| summed over batches: the first-order estimate of the loss change if w were set to zero."""
    scores = {name: torch.zeros_like(_original_weight(module)) for name, module in layers.items()}
    for _ in range(batch_count):
        model.zero_grad(set_to_none=True)
        loss = loss_fn(model, next(batches))
        check_loss(loss, 0)
        loss.backward()
        for name, module in layers.items():
            original = _original_weight(module)
            if original.grad is not None:
                scores[name] += (original.detach() * original.grad).abs()
    model.zero_grad(set_to_none=True)
    return scores
