"""Knowledge distillation for compression: the float model teaches its own low-bit or pruned copy.

A compressed network trained on the task loss alone learns from hard labels; the float model it came
from knows more (how confident to be off the centres, which near-misses look alike), and matching its
outputs is the usual way to recover the last points lost to low-bit weights (Polino et al. 2018,
"Model compression via distillation and quantization"; Mishra & Marr 2018, "Apprentice").

`with_distillation` wraps any `loss_fn(model, batch)` without knowing how it calls the model: a
forward hook on the student catches the inputs of its forward call and runs the frozen teacher on the
same inputs, inside the same autocast context, so the teacher costs one forward pass and no change to
the caller's loss.

Outputs alone are a narrow signal for a network whose every layer lost most of its bits: with
`feature_layers` the student also matches the teacher's activations at named inner modules (FitNets,
Romero et al. 2015; the usual companion of low-bit training of detectors, e.g. Li et al. 2019, "Fully
quantized network for object detection"). Each layer's error is relative, ||s - t||^2 / ||t||^2, so
layers of any scale weigh alike.
"""

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from compression.progress import LossFunction

# student outputs, teacher outputs -> scalar; both are whatever the model's forward returns.
OutputLoss = Callable[[Any, Any], Tensor]


def output_mse(student: Any, teacher: Any) -> Tensor:
    """Mean squared error between every pair of output tensors (a tensor, or a tuple/list/dict of them), summed.

    On logits this is logit matching (Ba & Caruana 2014), which needs no temperature.
    """
    pairs = list(zip(_tensors(student), _tensors(teacher), strict=True))
    if not pairs:
        raise ValueError("the model's outputs hold no tensor to distill")
    return sum(torch.mean((s.float() - t.float()) ** 2) for s, t in pairs)


def frozen_teacher(model: nn.Module) -> nn.Module:
    """`model` itself as a teacher: inference mode (batch norm on running statistics) and no gradients."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def relative_feature_error(student: Tensor, teacher: Tensor) -> Tensor:
    """||student - teacher||^2 / ||teacher||^2 over the whole batch: a scale-free error for any activation."""
    student, teacher = student.float(), teacher.float()
    return torch.sum((student - teacher) ** 2) / torch.sum(teacher**2).clamp(min=1e-12)


def with_distillation(
    loss_fn: LossFunction,
    teacher: nn.Module,
    weight: float,
    output_loss: OutputLoss = output_mse,
    feature_layers: tuple[str, ...] = (),
    feature_weight: float = 0.0,
) -> LossFunction:
    """loss_fn(model, batch) + weight * output_loss(model's outputs, teacher's outputs on the same inputs)
    + feature_weight * the mean relative error of the activations of `feature_layers` (module names that
    student and teacher share)."""
    if not (weight > 0 or feature_weight > 0):
        raise ValueError(f"a distillation weight is positive, got {weight} (outputs) and {feature_weight} (features)")
    if weight < 0 or feature_weight < 0:
        raise ValueError(f"distillation weights are zero or positive, got {weight} and {feature_weight}")
    if feature_weight > 0 and not feature_layers:
        raise ValueError("feature distillation needs the names of the layers whose activations to match")
    feature_layers = tuple(feature_layers) if feature_weight > 0 else ()
    teacher_modules = _named_modules(teacher, feature_layers, "teacher")

    def distilled(model: nn.Module, batch) -> Tensor:
        calls: list[tuple[Any, Any]] = []
        student_features: dict[str, list[Tensor]] = {name: [] for name in feature_layers}
        teacher_features: dict[str, list[Tensor]] = {name: [] for name in feature_layers}

        def run_teacher(_module, args, kwargs, output):
            with torch.no_grad():
                calls.append((output, teacher(*args, **kwargs)))

        student_modules = _named_modules(model, feature_layers, "model")
        handles = [model.register_forward_hook(run_teacher, with_kwargs=True)]
        for name in feature_layers:
            handles.append(student_modules[name].register_forward_hook(_collect(student_features[name])))
            handles.append(teacher_modules[name].register_forward_hook(_collect(teacher_features[name])))
        try:
            task_loss = loss_fn(model, batch)
        finally:
            for handle in handles:
                handle.remove()
        if not calls:
            raise ValueError("the loss function never called the model, so there is nothing to distill")
        loss = task_loss
        if weight > 0:
            loss = loss + weight * sum(output_loss(student, taught) for student, taught in calls) / len(calls)
        if feature_layers:
            errors = [
                relative_feature_error(s, t)
                for name in feature_layers
                for s, t in zip(student_features[name], teacher_features[name], strict=True)
            ]
            loss = loss + feature_weight * sum(errors) / len(errors)
        return loss

    return distilled


def _named_modules(model: nn.Module, names: tuple[str, ...], what: str) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    unknown = [name for name in names if name not in modules]
    if unknown:
        raise ValueError(f"feature distillation layers {unknown} are not modules of the {what}")
    return {name: modules[name] for name in names}


def _collect(into: list[Tensor]):
    def hook(_module, _args, output):
        if not isinstance(output, Tensor):
            raise ValueError(
                f"feature distillation matches modules that return one tensor, got {type(output).__name__}"
            )
        into.append(output)

    return hook


def _tensors(outputs: Any) -> list[Tensor]:
    if isinstance(outputs, Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        return [t for key in sorted(outputs) for t in _tensors(outputs[key])]
    if isinstance(outputs, list | tuple):
        return [t for item in outputs for t in _tensors(item)]
    return []
