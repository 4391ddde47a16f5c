"""ADMM low-bit weight quantization (Leng et al., AAAI 2018) of the Conv2d and Linear layers of a torch model.

Minimize f(W) + I_C(G) subject to W = G, C = {alpha[o] * code : code in the layer's codebook}, by alternating
W-steps on f(W) + rho/2 ||W - G + U||^2 (a step on the loss, by Adam or by the paper's extra-gradient SGD,
then the exact proximal step of the quadratic), G-steps (exact projection of W + U onto C) and dual
updates U += W - G while rho grows; then W := G with the codes frozen and the float parts (batch norm,
biases) fine-tuned. Without data it is projection only. Batch norm is not folded here: the lowering folds
it into alpha (alpha * gamma / sigma) and leaves the codes unchanged.
"""

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize

from compression.codebooks import dequantize, project
from compression.progress import (
    LossFunction,
    Progress,
    ProgressCallback,
    check_loss,
    check_training_inputs,
    cycle_batches,
)
from compression.pruning import boundary_layers, squash_masks_, weight_layers, weight_mask
from compression.sensitivity import layer_sensitivity, most_sensitive
from model_store.ir import Codebook

LEARNING_RATE_SCHEDULES = ("cosine", "constant")
# How a W-step moves the weights on the loss (the proximal step of the penalty follows either way).
W_STEPS = ("adam", "extragradient-sgd", "extragradient-adam")


def weight_quantization(module: nn.Module) -> tuple[Codebook, Tensor, Tensor] | None:
    """(codebook, codes int8 like the weight, alpha float32 (O,)) of a layer that quantize_ quantized, else None.

    The layer's weight equals alpha[o] * codes[o] exactly and is frozen; batch norm is not folded in.
    """
    codes = getattr(module, "weight_codes", None)
    alpha = getattr(module, "weight_alpha", None)
    codebook = getattr(module, "codebook", None)
    if not (isinstance(codes, Tensor) and isinstance(alpha, Tensor) and isinstance(codebook, Codebook)):
        return None
    return codebook, codes, alpha


@dataclass
class AdmmQuantConfig:
    """How to quantize: which codebook where, and the ADMM and fine-tuning schedule.

    Every Conv2d and Linear is quantized with `codebook`, except `layer_codebooks` (by module name, wins
    over everything), `int8_layers`, and with `int8_boundary_layers` the layers that read the input or
    write an output (found on the torch.fx graph), which keep int8 because low-bit codes hurt them most.
    With `narrow_codebook`, the layers with fewer than `wide_channels` output channels take it instead of
    `codebook` (mixed precision by width: ternary costs a wide layer nothing and a narrow one most of its
    accuracy, docs/architecture.md). With `sensitive_codebook` (and data), the layers whose projection onto
    `codebook` alone raises the loss most take it instead, most sensitive first, as long as their weights fit
    in `sensitive_fraction` of all the model's weights (mixed precision by sensitivity,
    compression.sensitivity: measured on `sensitivity_batches` batches before ADMM starts).
    Each W-step is a step on the loss followed by the exact proximal step of the penalty,
    W := (W + rho (G - U)) / (1 + rho), which is stable for any rho and free of the weights' scale (a
    convolution followed by batch norm has an arbitrary one), unlike a penalty gradient that Adam would
    normalize away. The loss step is Adam (`w_step="adam"`) or the seed paper's extra-gradient
    (Korpelevich) method: a trial step on the loss W' = W - lr d(W), then the real one W := prox(W - lr d(W'))
    from the same W with the direction d taken at W', on the same batch; d is SGD's (heavy-ball averaged
    with `momentum`, `w_step="extragradient-sgd"`, the paper's) or Adam's (`"extragradient-adam"`,
    Gidel et al. 2019). That is two forward and backward passes per step, and a step that looks ahead
    instead of overshooting. The trial step leaves the penalty out, as the paper's nearly does: its penalty
    gradient moves W' a fraction lr rho of the way from W to G - U, where this unit-step prox would move it
    rho / (1 + rho) of the way, some 2,000 times more at rate 5e-4. Extra-gradient wants
    `scale_relative_rate` (its default there) on a model with batch norm. With SGD `learning_rate` is an
    SGD rate, not Adam's (the gradients of convolutions before batch norm are small).
    rho is multiplied by `rho_growth` every `rho_growth_every` G-steps, so W is held ever closer to the
    codebook. By default (`rho_growth=None`) the growth is chosen so that rho goes from `rho` to
    `rho_final` over the whole run, whatever its length: a fixed growth per G-step would clamp W to G after
    a few hundred steps of a long run and waste the rest (1.1 per 5 steps is a factor of 10^8 over 1,000
    steps).
    """

    codebook: Codebook = Codebook.POW2_4
    layer_codebooks: dict[str, Codebook] = field(default_factory=dict)
    int8_layers: tuple[str, ...] = ()
    int8_boundary_layers: bool = True
    narrow_codebook: Codebook | None = None
    wide_channels: int = 128
    sensitive_codebook: Codebook | None = None
    sensitive_fraction: float = 0.05
    sensitivity_batches: int = 8
    admm_steps: int = 300
    steps_per_projection: int = 5
    rho: float = 0.01
    rho_final: float = 3.0
    rho_growth: float | None = None
    rho_growth_every: int = 1
    w_step: str = "adam"
    # Adam on a trained detector (peak training rate 2e-3): 5e-4 moved the loss little in the smoke runs.
    learning_rate: float = 5e-4
    # Heavy-ball momentum of the extra-gradient SGD W-step (unused otherwise).
    momentum: float = 0.9
    finetune_steps: int = 100
    finetune_learning_rate: float = 5e-4
    # "cosine" anneals the fine-tuning rate to zero (the last steps polish instead of jittering); "constant" keeps it.
    finetune_schedule: str = "cosine"
    # True: fine-tuning also moves the codes (see _finetune_codes); False: only the float parts train.
    finetune_codes: bool = False
    # True: each quantized layer's rate follows its weight norm relative to the norm it started ADMM with
    # (Adam: lr * |W| / |W0|; SGD: lr * (|W| / |W0|)^2), in the W-steps and the code fine-tuning. The G-step's
    # projection is shorter than what it projects, so every prox step shrinks W a little; where batch norm
    # follows, nothing in the loss holds the scale up, and a fixed rate becomes an ever larger relative step
    # (on the detector the median layer shrank to a quarter of its norm in 1,000 steps). Extra-gradient is
    # stable only to half the relative step plain descent is, and diverged there; Adam did better with the
    # growing step (docs/benchmarks.md). None (the default): on for the extra-gradient W-steps, off for Adam.
    scale_relative_rate: bool | None = None
    progress_every: int = 10

    def __post_init__(self):
        self.codebook = _codebook(self.codebook, "codebook")
        self.layer_codebooks = {name: _codebook(value, name) for name, value in dict(self.layer_codebooks).items()}
        if self.narrow_codebook is not None:
            self.narrow_codebook = _codebook(self.narrow_codebook, "narrow_codebook")
        if self.sensitive_codebook is not None:
            self.sensitive_codebook = _codebook(self.sensitive_codebook, "sensitive_codebook")
        if not (math.isfinite(self.sensitive_fraction) and 0 < self.sensitive_fraction <= 1):
            raise ValueError(
                f"sensitive_fraction is a fraction of the weights in (0, 1], got {self.sensitive_fraction}"
            )
        if isinstance(self.int8_layers, str):
            raise ValueError(f"int8_layers is a tuple of layer names, got the string {self.int8_layers!r}")
        self.int8_layers = tuple(self.int8_layers)
        for name in ("admm_steps", "finetune_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} cannot be negative, got {getattr(self, name)}")
        for name in (
            "steps_per_projection",
            "rho_growth_every",
            "progress_every",
            "wide_channels",
            "sensitivity_batches",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("rho", "rho_final", "learning_rate", "finetune_learning_rate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value}")
        if self.w_step not in W_STEPS:
            raise ValueError(f"w_step is one of {W_STEPS}, got {self.w_step!r}")
        if self.scale_relative_rate is None:
            self.scale_relative_rate = self.w_step.startswith("extragradient")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.finetune_schedule not in LEARNING_RATE_SCHEDULES:
            raise ValueError(f"finetune_schedule is one of {LEARNING_RATE_SCHEDULES}, got {self.finetune_schedule!r}")
        if self.rho_growth is not None and not (math.isfinite(self.rho_growth) and self.rho_growth >= 1):
            raise ValueError(f"rho_growth must be at least 1 (rho never shrinks), got {self.rho_growth}")
        if self.rho_final < self.rho:
            raise ValueError(f"rho_final ({self.rho_final}) must be at least rho ({self.rho}): rho never shrinks")

    def growth_per_update(self) -> float:
        """How much rho grows at each of its updates: `rho_growth`, or what takes rho to rho_final by the end."""
        if self.rho_growth is not None:
            return self.rho_growth
        projections = math.ceil(self.admm_steps / self.steps_per_projection)
        updates = max(1, projections // self.rho_growth_every)
        return (self.rho_final / self.rho) ** (1 / updates)

    def layer_codebook_plan(self, model: nn.Module) -> dict[str, Codebook]:
        """The codebook of every Conv2d and Linear of `model`, by name."""
        layers = weight_layers(model)
        unknown = sorted((set(self.layer_codebooks) | set(self.int8_layers)) - set(layers))
        if unknown:
            raise ValueError(f"layer_codebooks or int8_layers name no Conv2d or Linear of the model: {unknown}")
        int8 = set(self.int8_layers) | (boundary_layers(model) if self.int8_boundary_layers else set())

        def default(name: str) -> Codebook:
            if name in int8:
                return Codebook.INT8
            if self.narrow_codebook is not None and layers[name].weight.shape[0] < self.wide_channels:
                return self.narrow_codebook
            return self.codebook

        return {name: self.layer_codebooks.get(name, default(name)) for name in layers}

    def sensitive_candidates(self, plan: dict[str, Codebook]) -> list[str]:
        """The layers that `sensitive_codebook` may take: those on `codebook` that no rule named explicitly."""
        return [
            name
            for name, codebook in plan.items()
            if codebook is self.codebook and name not in self.layer_codebooks and name not in self.int8_layers
        ]


@dataclass
class LayerQuantization:
    """One layer's result: its codebook, the relative constraint residual ||W - G|| / ||W|| at every G-step
    (the first is the plain projection's error) and at the end, and the fraction of zero codes."""

    name: str
    codebook: Codebook
    residual: float
    residual_history: list[float]
    zero_codes: float


@dataclass
class QuantizationReport:
    """What quantize_ did, per layer, with the task loss of every ADMM and fine-tuning step."""

    layers: list[LayerQuantization]
    # With AdmmQuantConfig.sensitive_codebook: each candidate layer's loss increase when projected alone.
    sensitivity: dict[str, float] = field(default_factory=dict)
    admm_loss_history: list[float] = field(default_factory=list)
    finetune_loss_history: list[float] = field(default_factory=list)
    data_free: bool = True
    seconds: float = 0.0

    @property
    def loss_history(self) -> list[float]:
        """The loss curve of the whole run: ADMM steps, then fine-tuning steps."""
        return self.admm_loss_history + self.finetune_loss_history


class _LayerState:
    """The ADMM variables of one layer: the auxiliary G = alpha * codes, the scaled dual U and the mask."""

    def __init__(self, name: str, module: nn.Module, codebook: Codebook, mask: Tensor | None):
        self.name, self.module, self.codebook, self.mask = name, module, codebook, mask
        # A layer quantized before is frozen; quantizing it again (another codebook) trains it again.
        module.weight.requires_grad_(True)
        weight = module.weight.detach()
        if mask is not None:
            # Training after squash_masks_ may have revived pruned weights; the mask is what counts.
            weight.mul_(mask)
        self.dual = torch.zeros_like(weight)
        self.start_norm = weight.norm().clamp(min=1e-12).item()
        self.residuals: list[float] = []
        self.project()

    def project(self) -> None:
        self.codes, self.alpha = project(self.module.weight.detach() + self.dual, self.codebook, self.mask)
        self.target = dequantize(self.codes, self.alpha)

    def residual(self) -> float:
        weight = self.module.weight.detach()
        return ((weight - self.target).norm() / weight.norm().clamp(min=1e-12)).item()

    def norm_ratio(self, weight: Tensor | None = None) -> float:
        """|W| / |W0| (or of `weight`, a shadow of this layer): how far the layer's scale has drifted."""
        weight = self.module.weight if weight is None else weight
        return weight.detach().norm().item() / self.start_norm

    def mask_gradient(self) -> None:
        if self.mask is not None and self.module.weight.grad is not None:
            self.module.weight.grad.mul_(self.mask)

    def pull_toward_constraint(self, rho: float) -> None:
        """The penalty's proximal step: W := argmin ||V - W||^2 / 2 + rho / 2 ||V - G + U||^2 over V."""
        weight = self.module.weight.data
        weight.add_(self.target - self.dual, alpha=rho).div_(1 + rho)
        if self.mask is not None:
            weight.mul_(self.mask)

    def assign(self) -> LayerQuantization:
        """W := G for good: the weight becomes alpha * codes, frozen, with codes and alpha as buffers."""
        module = self.module
        module.weight.data.copy_(self.target.to(module.weight.dtype))
        module.weight.requires_grad_(False)
        for buffer, value in (("weight_codes", self.codes), ("weight_alpha", self.alpha.float())):
            if buffer in module._buffers:
                setattr(module, buffer, value)
            else:
                module.register_buffer(buffer, value)
        module.codebook = self.codebook
        zero_codes = (self.codes == 0).float().mean().item()
        return LayerQuantization(self.name, self.codebook, self.residuals[-1], self.residuals, zero_codes)


def quantize_(
    model: nn.Module,
    config: AdmmQuantConfig,
    data: Iterable | None = None,
    loss_fn: LossFunction | None = None,
    progress: ProgressCallback | None = None,
) -> QuantizationReport:
    """Quantize every Conv2d and Linear of `model` in place; returns the per-layer report.

    `data` is a re-iterable of batches (cycled as needed) and loss_fn(model, batch) a scalar loss; with
    both, ADMM runs config.admm_steps and fine-tunes the float parameters config.finetune_steps; with
    neither, each layer is projected onto its codebook (data-free). Pruning masks are squashed first and
    respected throughout: pruned weights stay exactly zero and get code 0.
    """
    started = time.time()
    training = check_training_inputs(data, loss_fn)
    plan = config.layer_codebook_plan(model)
    layers = weight_layers(model)
    candidates = config.sensitive_candidates(plan) if config.sensitive_codebook is not None else []
    if candidates and not training:
        raise ValueError(
            "sensitive_codebook chooses layers by their loss, so it needs data and loss_fn; "
            "without data use narrow_codebook or layer_codebooks"
        )
    may_be_binary = {name for name, codebook in plan.items() if codebook is Codebook.BINARY}
    if config.sensitive_codebook is Codebook.BINARY:
        may_be_binary.update(candidates)
    pruned_binary = sorted(name for name in may_be_binary if weight_mask(layers[name]) is not None)
    if pruned_binary:
        raise ValueError(
            f"layers {pruned_binary} are pruned but may get the binary codebook, which has no zero code: "
            "give them ternary or a wider codebook"
        )
    squash_masks_(model)
    sensitivity = {}
    if candidates:
        sensitivity = layer_sensitivity(
            model,
            {name: (layers[name], plan[name], weight_mask(layers[name])) for name in candidates},
            cycle_batches(data),
            loss_fn,
            config.sensitivity_batches,
            progress,
        )
        sizes = {name: layers[name].weight.numel() for name in candidates}
        budget = int(config.sensitive_fraction * sum(layer.weight.numel() for layer in layers.values()))
        for name in most_sensitive(sensitivity, sizes, budget):
            plan[name] = config.sensitive_codebook
    states = [_LayerState(name, layers[name], plan[name], weight_mask(layers[name])) for name in plan]
    for state in states:
        state.residuals.append(state.residual())
    report = QuantizationReport([], sensitivity=sensitivity, data_free=not training)
    was_training = model.training
    try:
        if training:
            batches = cycle_batches(data)
            model.train()
            report.admm_loss_history = _admm(model, states, config, batches, loss_fn, progress)
            if config.finetune_codes:
                report.finetune_loss_history = _finetune_codes(model, states, config, batches, loss_fn, progress)
                report.layers = [state.assign() for state in states]
            else:
                report.layers = [state.assign() for state in states]
                report.finetune_loss_history = _finetune(model, config, batches, loss_fn, progress)
        else:
            report.layers = [state.assign() for state in states]
            if progress is not None:
                residual = _mean_residual(states)
                progress(Progress("project", len(states), len(states), residual=residual))
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    report.seconds = round(time.time() - started, 3)
    return report


def _admm(
    model: nn.Module,
    states: list[_LayerState],
    config: AdmmQuantConfig,
    batches,
    loss_fn: LossFunction,
    progress: ProgressCallback | None,
) -> list[float]:
    w_step = _WStep(model, states, [p for p in model.parameters() if p.requires_grad], loss_fn, config)
    rho, projections, losses = config.rho, 0, []
    growth = config.growth_per_update()
    for step in range(config.admm_steps):
        losses.append(w_step(next(batches), rho, step))
        if (step + 1) % config.steps_per_projection == 0 or step + 1 == config.admm_steps:
            for state in states:
                state.project()
                state.dual += state.module.weight.detach() - state.target
                state.residuals.append(state.residual())
            projections += 1
            if projections % config.rho_growth_every == 0:
                rho *= growth
                # U is the scaled dual lambda / rho: it shrinks as rho grows so that lambda stays put.
                for state in states:
                    state.dual /= growth
        if progress is not None and ((step + 1) % config.progress_every == 0 or step + 1 == config.admm_steps):
            progress(Progress("admm", step + 1, config.admm_steps, losses[-1], _mean_residual(states)))
    return losses


class _WStep:
    """One W-step (see AdmmQuantConfig): a step of the optimizer on the loss, then the penalty's proximal
    step; with `w_step="extragradient-*"` first a trial step, then the step from the same point with the
    trial point's gradient. The optimizer's state (momentum, moments) and batch norm's running statistics
    are put back after the trial, so only the real step counts in them. Returns the loss at W."""

    def __init__(self, model, states, parameters, loss_fn, config: AdmmQuantConfig):
        self.model, self.states, self.parameters, self.loss_fn = model, states, parameters, loss_fn
        self.config = config
        self.lookahead = config.w_step.startswith("extragradient")
        # One group per quantized layer, in the order of `states` (its rate may follow its scale).
        groups = _parameter_groups(parameters, [(state.module.weight, {}) for state in states])
        if config.w_step == "extragradient-sgd":
            self.optimizer = torch.optim.SGD(groups, lr=config.learning_rate, momentum=config.momentum)
            self.rate_power = 2  # SGD's step on a scale-free weight is lr |g| with |g| ~ 1 / |W|
        else:
            self.optimizer = torch.optim.Adam(groups, lr=config.learning_rate)
            self.rate_power = 1  # Adam's step is about lr per weight whatever the gradient's size

    def _backward(self, batch, step: int) -> float:
        loss = self.loss_fn(self.model, batch)
        check_loss(loss, step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for state in self.states:
            state.mask_gradient()
        return loss.item()

    def _step(self, rho: float | None) -> None:
        """The optimizer's step on the loss, then (rho given) the penalty's proximal step."""
        if self.config.scale_relative_rate:
            for group, state in zip(self.optimizer.param_groups[: len(self.states)], self.states, strict=True):
                group["lr"] = self.config.learning_rate * state.norm_ratio() ** self.rate_power
        self.optimizer.step()
        if rho is not None:
            for state in self.states:
                state.pull_toward_constraint(rho)

    def __call__(self, batch, rho: float, step: int) -> float:
        if not self.lookahead:
            loss = self._backward(batch, step)
            self._step(rho)
            return loss
        origin = [p.detach().clone() for p in self.parameters]
        optimizer_state = {
            p: {key: value.clone() if isinstance(value, Tensor) else value for key, value in state.items()}
            for p, state in self.optimizer.state.items()
        }
        loss = self._backward(batch, step)
        self._step(None)  # the trial step: the loss alone (see AdmmQuantConfig)
        # The look-ahead pass must not count in batch norm's running statistics: the batch was seen at W.
        statistics = [(b, b.clone()) for m in self.model.modules() if isinstance(m, _BatchNorm) for b in m.buffers()]
        self._backward(batch, step)
        with torch.no_grad():
            for buffer, saved in statistics:
                buffer.copy_(saved)
            for p, start in zip(self.parameters, origin, strict=True):
                p.copy_(start)
        self.optimizer.state.clear()
        self.optimizer.state.update(optimizer_state)
        self._step(rho)
        self.optimizer.zero_grad(set_to_none=True)
        return loss


def _finetune(
    model: nn.Module,
    config: AdmmQuantConfig,
    batches,
    loss_fn: LossFunction,
    progress: ProgressCallback | None,
    before_step: Callable[[], None] = lambda: None,
    rates: dict[int, float] | None = None,
) -> list[float]:
    """Train what requires grad: the float parts (batch norm, biases; their statistics follow), and with
    `_finetune_codes` the shadow weights too. `before_step` runs between backward and the optimizer step;
    `rates` gives some parameters (by id) their own starting rate."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters or config.finetune_steps == 0:
        return []
    rates = rates or {}
    groups = _parameter_groups(parameters, [(p, {"lr": rates[id(p)]}) for p in parameters if id(p) in rates])
    optimizer = torch.optim.Adam(groups, lr=config.finetune_learning_rate)
    schedule = None
    if config.finetune_schedule == "cosine":
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.finetune_steps)
    losses = []
    for step in range(config.finetune_steps):
        loss = loss_fn(model, next(batches))
        check_loss(loss, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        before_step()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        losses.append(loss.item())
        if progress is not None and ((step + 1) % config.progress_every == 0 or step + 1 == config.finetune_steps):
            progress(Progress("finetune", step + 1, config.finetune_steps, losses[-1]))
    return losses


class _StraightThroughProjection(nn.Module):
    """The parametrization weight = project(shadow), with the gradient passed straight through to the shadow."""

    def __init__(self, codebook: Codebook, mask: Tensor | None):
        super().__init__()
        self.codebook, self.mask = codebook, mask

    def forward(self, shadow: Tensor) -> Tensor:
        codes, alpha = project(shadow.detach(), self.codebook, self.mask)
        return shadow + (dequantize(codes, alpha).to(shadow.dtype) - shadow).detach()


def _finetune_codes(
    model: nn.Module,
    states: list[_LayerState],
    config: AdmmQuantConfig,
    batches,
    loss_fn: LossFunction,
    progress: ProgressCallback | None,
) -> list[float]:
    """Fine-tune with the codes free: each layer computes with the projection of a float shadow weight.

    The shadows start at the hard assignment G, so the first step computes exactly what ADMM ended with;
    the straight-through estimator (Bengio et al. 2013; the fine-tuning of most quantization-aware
    training) lets the loss move a shadow across a code boundary, which frozen codes never allow. At the
    end each layer is projected once more and its codes are those of its shadow.
    """
    for state in states:
        state.module.weight.data.copy_(state.target.to(state.module.weight.dtype))
        parametrize.register_parametrization(
            state.module, "weight", _StraightThroughProjection(state.codebook, state.mask)
        )

    def mask_shadow_gradients() -> None:
        for state in states:
            shadow = state.module.parametrizations.weight.original
            if state.mask is not None and shadow.grad is not None:
                shadow.grad.mul_(state.mask)

    rates = {}
    if config.scale_relative_rate:
        for state in states:
            shadow = state.module.parametrizations.weight.original
            rates[id(shadow)] = config.finetune_learning_rate * state.norm_ratio(shadow)
    try:
        return _finetune(model, config, batches, loss_fn, progress, before_step=mask_shadow_gradients, rates=rates)
    finally:
        for state in states:
            # The plain parameter again, holding the shadow; project() below turns it into codes.
            parametrize.remove_parametrizations(state.module, "weight", leave_parametrized=False)
            state.dual.zero_()
            state.project()
            state.residuals.append(state.residual())


def _parameter_groups(parameters: list[Tensor], own: list[tuple[Tensor, dict]]) -> list[dict]:
    """Optimizer groups: one per parameter of `own`, in its order and with its options, then the rest of
    `parameters` together with the optimizer's defaults."""
    owned = {id(parameter) for parameter, _ in own}
    groups = [{"params": [parameter], **options} for parameter, options in own]
    rest = [parameter for parameter in parameters if id(parameter) not in owned]
    return groups + ([{"params": rest}] if rest else [])


def _mean_residual(states: list[_LayerState]) -> float:
    return sum(state.residuals[-1] for state in states) / max(len(states), 1)


def _codebook(value, what: str) -> Codebook:
    try:
        return Codebook(value)
    except ValueError:
        raise ValueError(f"{what}: {value!r} is not a codebook; use one of {[c.value for c in Codebook]}") from None
