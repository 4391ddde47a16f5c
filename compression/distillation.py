"""Knowledge distillation for compression: the float model teaches its own low-bit or pruned copy.

A compressed network trained on the task loss alone learns from hard labels; the float model it came
from knows more (how confident to be off the centres, which near-misses look alike), and matching its
outputs is the usual way to recover the last points lost to low-bit weights (Polino et al. 2018,
"Model compression via distillation and quantization"; Mishra & Marr 2018, "Apprentice").

`with_distillation` wraps any `loss_fn(model, batch)` without knowing how it calls the model: a
forward hook on the student catches the inputs of its forward call and runs the frozen teacher on the
same inputs, inside the same autocast context, so the teacher costs one forward pass and no change to
the caller's loss.
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


def with_distillation(
    loss_fn: LossFunction, teacher: nn.Module, weight: float, output_loss: OutputLoss = output_mse
) -> LossFunction:
    """loss_fn(model, batch) + weight * output_loss(model's outputs, teacher's outputs on the same inputs)."""
    if not weight > 0:
        raise ValueError(f"a distillation weight is positive, got {weight}")

    def distilled(model: nn.Module, batch) -> Tensor:
        calls: list[tuple[Any, Any]] = []

        def run_teacher(_module, args, kwargs, output):
            with torch.no_grad():
                calls.append((output, teacher(*args, **kwargs)))

        handle = model.register_forward_hook(run_teacher, with_kwargs=True)
        try:
            task_loss = loss_fn(model, batch)
        finally:
            handle.remove()
        if not calls:
            raise ValueError("the loss function never called the model, so there is nothing to distill")
        distillation = sum(output_loss(student, taught) for student, taught in calls) / len(calls)
        return task_loss + weight * distillation

    return distilled


def _tensors(outputs: Any) -> list[Tensor]:
    if isinstance(outputs, Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        return [t for key in sorted(outputs) for t in _tensors(outputs[key])]
    if isinstance(outputs, list | tuple):
        return [t for item in outputs for t in _tensors(item)]
    return []
